"""Nothing a run reads executes code, and nothing it writes holds a secret: no remote code
by default, weights as safetensors only, Lightning checkpoints unpickled with
`weights_only=True`, and API keys from the environment never in the run directory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM

from irpo.cli import register_all
from irpo.errors import UserError
from irpo.methods import DPO
from irpo.models.load import ModelLoadError, load_policy
from irpo.models.tiny_tokenizer import build_tokenizer
from irpo.pairs import PairRule
from irpo.spec import build
from irpo.tasks.arith import ArithTask
from irpo.training.batching import MicroBatching
from irpo.training.data import DataSettings, IterationData
from irpo.training.train import train_policy

CONF = Path(__file__).parents[1] / "conf"
SECRETS = {"WANDB_API_KEY": "sk-test-SECRET123", "HF_TOKEN": "hf_SECRET456"}


@pytest.fixture(scope="module")
def composer():
    register_all()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield lambda *overrides: compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def model_dir(random_model_dir):
    return random_model_dir


class _Payload:
    """Unpickling this creates `marker`: the stand-in for code hidden in a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_no_model_preset_trusts_remote_code(composer, preset):
    cfg = composer(f"model={preset}")
    assert cfg.model.trust_remote_code is False
    assert cfg.generator.trust_remote_code is False


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_no_experiment_trusts_remote_code(composer, experiment):
    cfg = composer(f"experiment={experiment}", "generator=vllm")
    assert cfg.model.trust_remote_code is False and cfg.generator.trust_remote_code is False


def test_pickled_weights_are_refused_unread(tmp_path, model_dir):
    marker = tmp_path / "pwned"
    (tmp_path / "config.json").write_text((model_dir / "config.json").read_text())
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_policy(str(tmp_path))
    assert not marker.exists()


def test_safetensors_are_read_even_beside_a_pickle(tmp_path, model_dir):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in ("config.json", "model.safetensors"):
        (ckpt / f).write_bytes((model_dir / f).read_bytes())
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, ckpt / "pytorch_model.bin")
    load_policy(str(ckpt))
    assert not marker.exists()


def test_hub_weights_are_asked_for_as_safetensors(monkeypatch):
    seen = {}
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kw: seen.update(kw))
    load_policy("someone/some-model")
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False


@pytest.fixture
def tiny_fit(tmp_path, composer, model_dir):
    """train_policy(max_steps) on four hand-written pairs, checkpointing every step."""
    task = ArithTask(train_size=4, test_size=1)
    tok = build_tokenizer()
    it = tmp_path / "iter_0"
    it.mkdir()
    (it / "pairs.jsonl").write_text(
        "".join(
            json.dumps({"prompt_id": str(i), "prompt": f"Q: {i}+1\nA:", "chosen": f" {i + 1}\n", "rejected": f" {i}\n"})
            + "\n"
            for i in range(4)
        )
    )
    data = IterationData(
        task=task,
        examples=task.load("train"),
        prompts=["Q"] * 4,
        out_dir=it,
        iteration=0,
        tokenizer=tok,
        method=DPO("irpo"),
        settings=DataSettings(
            num_samples=2,
            temperature=1.0,
            pair_rule=PairRule(1),
            seed=0,
            max_length=64,
            batching=MicroBatching(2, 2),
            shard_size=4,
        ),
    )

    def fit(max_steps: int, ckpt_dir: Path) -> None:
        cfg = composer(
            f"model.path={model_dir}",
            "trainer.reference=live",
            "trainer.batch_size=2",
            f"trainer.max_steps={max_steps}",
            "trainer.checkpoint_every_n_steps=1",
            "trainer.progress_bar=false",
            "logger=none",
        )
        train_policy(replace(build(cfg), method=DPO("irpo")), data, str(model_dir), it / "model", ckpt_dir, [])

    return fit


def test_resumed_training_unpickles_its_checkpoint_weights_only(tiny_fit, tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "train"
    tiny_fit(1, ckpt_dir)
    assert (ckpt_dir / "last.ckpt").exists()
    loads = []
    real_load = torch.load

    def recording_load(f, *args, **kwargs):
        loads.append((str(getattr(f, "path", f)), kwargs.get("weights_only")))  # Lightning passes an fsspec file
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    tiny_fit(2, ckpt_dir)
    assert any(f.endswith("last.ckpt") for f, _ in loads), loads
    assert all(weights_only is True for _, weights_only in loads), loads


def test_a_checkpoint_holding_code_does_not_run_it(tiny_fit, tmp_path):
    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "train"
    ckpt_dir.mkdir()
    torch.save({"state_dict": _Payload(marker)}, ckpt_dir / "last.ckpt")
    with pytest.raises(UserError, match="not a checkpoint irpo loads safely.*delete it"):
        tiny_fit(1, ckpt_dir)
    assert not marker.exists()


@pytest.mark.slow
def test_api_keys_are_never_written(tmp_path, model_dir):
    from conftest import run_cli

    run = tmp_path / "run"
    proc = run_cli(
        f"model.path={model_dir}",
        "task.train_size=8",
        "task.test_size=4",
        "num_samples=2",
        "eval.maj_k=0",
        "iterations=1",
        "gold_winner=true",
        "trainer.batch_size=4",
        "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "logger=wandb",
        "logger.wandb.mode=offline",
        f"hydra.run.dir={run}",
        env=SECRETS,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The scan must cover what W&B wrote, or finding nothing proves nothing.
    assert list(run.glob("wandb/offline-run-*/run-*.wandb")) and (run / "iter_0" / "model").is_dir()
    files = [p for p in run.rglob("*") if p.is_file()]
    leaks = [(str(p), name) for p in files for name, secret in SECRETS.items() if secret.encode() in p.read_bytes()]
    assert not leaks
    assert not any(secret in proc.stdout + proc.stderr for secret in SECRETS.values())
