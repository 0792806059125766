import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *overrides: str, cwd: Path | None = None, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m irpo <overrides>` in a subprocess, as a user runs it; by default from a
    fresh directory, so that runs without `hydra.run.dir` leave no outputs/ in the checkout."""
    full_env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "irpo", *overrides],
        cwd=cwd or tempfile.mkdtemp(prefix="irpo-cli-"),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture(autouse=True)
def no_hub_probe(monkeypatch):
    """Tests never reach for the network: in-process, the hub counts as reachable (tests of
    the probe itself use irpo.run.hub's functions directly)."""
    from irpo.run import hub

    monkeypatch.setattr(hub, "unreachable", lambda: None)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with the tiny tokenizer: what tests load, not what they learn.
    It never gets an arith answer right, so its samples have no winners."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from irpo.models.tiny_tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("random_llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bf16_qwen2_dir(tmp_path_factory) -> Path:
    """A random Qwen2-architecture model (q/k/v biases, tied embeddings, GQA; weights of std
    0.02) saved in bfloat16, with the tiny tokenizer: a GPU preset's checkpoint in miniature."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from irpo.models.tiny_tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.02,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen2_bf16")
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def launched_on_16_ranks(monkeypatch):
    """This process as torchrun starts rank 0 of 2 nodes x 8 GPUs, the paper presets' layout
    (a multi-device trainer config is valid only under a launcher)."""
    env = dict(TORCHELASTIC_RUN_ID="test", RANK=0, GROUP_RANK=0, LOCAL_RANK=0, LOCAL_WORLD_SIZE=8, WORLD_SIZE=16)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
