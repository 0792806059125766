"""`python -m irpo` as a user runs it: two iterations of the whole loop on a reduced config."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from irpo.models.load import tiny_m0_dir
from irpo.run.artifacts import read_jsonl

SMALL = [
    "iterations=2",
    "task.train_size=64",
    "task.test_size=32",
    "num_samples=4",
    "eval.maj_k=2",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The run as a user starts it with its output sent to a log file: W&B offline and
    unsilenced, stdout and stderr into one file (no terminal)."""
    root = tmp_path_factory.mktemp("e2e")
    run, log = root / "run", root / "out.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_FULL_ERROR"))}
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "irpo", *SMALL, f"hydra.run.dir={run}"],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=900,
        )
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    return run, output


@pytest.mark.slow
def test_a_log_file_says_each_iteration_as_it_finishes_and_nothing_else(finished_run):
    run, output = finished_run
    lines = output.splitlines()
    done = [
        i
        for i, line in enumerate(lines)
        if re.search(r"\[irpo\]\[INFO\] - iteration \d: M_\d test accuracy \d\.\d{3} \(maj@2 \d\.\d{3}\)", line)
    ]
    assert len(done) == 3, output
    # each as its iteration finishes, not with the table at the end
    assert done[0] < next(i for i, line in enumerate(lines) if "iter 1 · eval: started" in line) < done[1]
    assert "pairs; " in lines[done[0]] and lines[done[0]].endswith(" s")
    assert any(line.endswith("iter 0 · generate: finished in " + line.rsplit(" in ", 1)[-1]) for line in lines)
    for noise in (
        "\r",
        "█",
        "it/s",
        "Epoch 0",
        "v_num",
        "Run history",
        "Run summary",
        "anonymous",
        "WARNING",
        "Warning",
        "font",
    ):
        assert noise not in output, (noise, output)
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    assert size < 15 * 2**20 and not list(run.glob("iter_*/train/*.ckpt"))


@pytest.mark.slow
def test_every_iteration_writes_its_artifacts(finished_run):
    run, _ = finished_run
    for t in (0, 1):
        it = run / f"iter_{t}"
        gens = read_jsonl(it / "generations.jsonl")
        assert len(gens) == 64 * 4
        assert set(gens[0]) == {"prompt_id", "sample", "completion", "answer", "reward"}
        assert all(g["reward"] in (0.0, 1.0) for g in gens)
        pairs = read_jsonl(it / "pairs.jsonl")
        assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
        correct = {(g["prompt_id"], g["completion"]) for g in gens if g["reward"] == 1.0}
        assert all((p["prompt_id"], p["chosen"]) in correct for p in pairs)
        ref = load_file(it / "reference_logps.safetensors")
        assert ref["chosen"].shape == (len(pairs),) and torch.isfinite(ref["chosen"]).all()
        metrics = json.loads((it / "metrics.json").read_text())
        assert metrics["iteration"] == t and metrics["pairs"] == len(pairs) > 0
        for key in (
            "train_pass_at_n",
            "test_accuracy",
            "maj@2",
            "train_loss",
            "train_dpo_loss",
            "train_nll_loss",
            "train_reward_accuracy",
        ):
            assert key in metrics
        assert (it / "model" / "model.safetensors").exists() and (it / "model" / "tokenizer.json").exists()
        assert (it / "eval.json").exists() and (it / "train" / "metrics.csv").exists()
    assert json.loads((run / "iter_2" / "eval.json").read_text())["test_size"] == 32
    assert not list(run.rglob(".tmp-*"))


@pytest.mark.slow
def test_each_iteration_trains_from_the_last_model(finished_run):
    run, _ = finished_run
    m0 = load_file(f"{tiny_m0_dir()}/model.safetensors")
    m1 = load_file(run / "iter_0" / "model" / "model.safetensors")
    m2 = load_file(run / "iter_1" / "model" / "model.safetensors")
    key = next(k for k in m0 if "layers.0.mlp" in k)
    assert not torch.equal(m0[key], m1[key]) and not torch.equal(m1[key], m2[key])
    # M_1 is M_0 after a few small steps, not a fresh model: still close to it.
    assert (m1[key] - m0[key]).abs().max() < 0.1


@pytest.mark.slow
def test_metrics_table_and_wandb(finished_run):
    run, proc = finished_run
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert "test accuracy" in proc and "pairs" in proc
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,trained", [("sft_chosen", True), ("sft_gold", True), ("zero_shot", False), ("dpo", True)]
)
def test_every_method_runs(tmp_path, method, trained):
    from conftest import run_cli

    run = tmp_path / "run"
    # dpo's run also keeps its finished iteration's checkpoints, as asked (the others' go)
    keep = method == "dpo"
    proc = run_cli(
        "iterations=1",
        "task.train_size=32",
        "task.test_size=8",
        "num_samples=4",
        "eval.maj_k=0",
        "logger=none",
        "trainer.progress_bar=false",
        f"method={method}",
        "trainer.checkpoint_every_n_steps=1",
        f"trainer.keep_checkpoints={keep}",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "iter_0" / "model").exists() == trained
    assert (run / "iter_0" / "train" / "last.ckpt").is_file() == (trained and keep)
    assert (run / "iter_1" / "eval.json").exists() == trained
    # Sampling serves the pair-based methods only; SFT on gold CoT needs no samples.
    assert (run / "iter_0" / "generations.jsonl").exists() == (method in ("sft_chosen", "dpo"))
    assert (run / "iter_0" / "reference_logps.safetensors").exists() == (method == "dpo")


def test_a_plan_or_a_refusal_leaves_no_run_directory(cli, tmp_path):
    """Hydra creates outputs/<task>/<time>/ before irpo runs: a launch that never owned it
    (a plan, a dry run, a config refused at start) removes it."""
    for args in (["plan=true"], ["dry_run=true", "logger=none"], ["num_samples=0"], ["task.test_size=0"]):
        proc = cli(*args, cwd=tmp_path, timeout=300)
        assert proc.returncode == (0 if args[0].startswith(("plan", "dry")) else 2), proc.stderr[-2000:]
        assert not (tmp_path / "outputs").exists(), args
