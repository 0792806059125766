"""Kill the CLI (SIGKILL, no cleanup) during generation, training and checkpoint saving;
rerun the same command; the run must end exactly where an uninterrupted one does."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file

from irpo.run.artifacts import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

SMALL = [
    "iterations=1",
    "task.train_size=48",
    "task.test_size=16",
    "num_samples=4",
    "eval.maj_k=0",
    "shard_size=16",
    "trainer.batch_size=8",
    "trainer.checkpoint_every_n_steps=2",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "logger=none",
]


def start(run, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "irpo", *SMALL, f"hydra.run.dir={run}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def finish(run, *prefix):
    """Runs the same command to its end (prefix: a command it runs under, as taskset)."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "irpo", *SMALL, f"hydra.run.dir={run}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    finish(run)
    return run


def assert_same_result(run, reference):
    for name in ("generations.jsonl", "pairs.jsonl"):
        assert read_jsonl(run / "iter_0" / name) == read_jsonl(reference / "iter_0" / name)
    ours, theirs = (
        load_file(run / "iter_0/model/model.safetensors"),
        load_file(reference / "iter_0/model/model.safetensors"),
    )
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=1e-4)
    a, b = json.loads((run / "iter_1/eval.json").read_text()), json.loads((reference / "iter_1/eval.json").read_text())
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1 / 16)
    assert not list(run.rglob(".tmp-*"))


def training_record(run):
    """iter_0's per-step rows (less the step's speed) and its training metrics."""
    with open(run / "iter_0/train/metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if k != "train/tokens_per_s"} for row in csv.DictReader(f)]
    metrics = json.loads((run / "iter_0/metrics.json").read_text())
    return rows, {
        k: v for k, v in metrics.items() if k.startswith("train_") and k not in ("train_tokens_per_s", "train_seconds")
    }


def assert_same_training_record(run, reference):
    """A resumed training keeps every row an uninterrupted one logs, and reports the whole
    training's metrics (pair-tokens, losses, reward accuracy and margin)."""
    (rows, metrics), (want_rows, want_metrics) = training_record(run), training_record(reference)
    assert [r["step"] for r in rows] == [r["step"] for r in want_rows]
    for row, want in zip(rows, want_rows):
        assert row == pytest.approx(want, abs=1e-4)
    assert (
        metrics.keys() == want_metrics.keys()
        and {"train_loss", "train_reward_accuracy", "train_reward_margin"} <= metrics.keys()
    )
    assert metrics["train_pair_tokens"] == want_metrics["train_pair_tokens"]
    assert metrics == pytest.approx(want_metrics, abs=1e-4)


def stage_events(run):
    return [(e["stage"], e["event"]) for e in read_jsonl(run / "events.jsonl") if "stage" in e]  # not the launches


def assert_no_stage_ran_twice(run):
    finished = [s for s, e in stage_events(run) if e == "finish"]
    assert len(finished) == len(set(finished))
    # A stage is started again only if it had not finished when the process died.
    for s, e in stage_events(run):
        if e == "start":
            starts = [i for i, (s2, e2) in enumerate(stage_events(run)) if (s2, e2) == (s, "start")]
            ends = [i for i, (s2, e2) in enumerate(stage_events(run)) if (s2, e2) == (s, "finish")]
            assert all(i < ends[0] for i in starts)


def test_kill_during_generation(tmp_path, reference_run):
    run = tmp_path / "run"
    proc = start(run, {"IRPO_FAILPOINT": "before-rename:shard_00001.jsonl"})
    assert proc.wait(timeout=600) == -signal.SIGKILL
    shards = run / "iter_0" / "generations"
    assert [p.name for p in shards.glob("shard_*.jsonl")] == ["shard_00000.jsonl"]
    assert not (run / "iter_0" / "generations.jsonl").exists()
    # Mark the finished shard's rows: a rerun that reuses the shard keeps the mark.
    rows = read_jsonl(shards / "shard_00000.jsonl")
    write_jsonl(shards / "shard_00000.jsonl", [{**r, "from_first_run": True} for r in rows])
    finish(run)
    merged = read_jsonl(run / "iter_0" / "generations.jsonl")
    assert all(r.pop("from_first_run", False) for r in merged[: len(rows)]) and not any(
        "from_first_run" in r for r in merged
    )
    write_jsonl(run / "iter_0" / "generations.jsonl", merged)
    assert_same_result(run, reference_run)
    assert_no_stage_ran_twice(run)


def test_kill_during_training(tmp_path, reference_run):
    run = tmp_path / "run"
    proc = start(run)
    last = run / "iter_0" / "train" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (run / "iter_0" / "model").exists()
    step = torch.load(last, weights_only=True)["global_step"]
    # Resumed on one core: it computes with the thread count its first launch recorded, so
    # its model is the uninterrupted run's to the bit, whatever the machine offers now.
    finish(run, "taskset", "-c", "0")
    assert_same_result(run, reference_run)
    ours, theirs = (
        load_file(run / "iter_0/model/model.safetensors"),
        load_file(reference_run / "iter_0/model/model.safetensors"),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    launches = [e for e in read_jsonl(run / "events.jsonl") if e.get("event") == "launch"]
    assert [e["threads_from"] for e in launches] == [
        "the cores this process may use",
        "recorded by the run's first launch",
    ]
    assert launches[0]["threads"] == launches[1]["threads"] == len(os.sched_getaffinity(0))
    assert_no_stage_ran_twice(run)
    # Training went on from the checkpoint, not from step 0: the rerun trained on fewer
    # pair-tokens than the whole training did.
    resumed = json.loads((run / "manifest.json").read_text())["stages"]["iter_0/train"]["tokens"]
    assert step > 0 and 0 < resumed < training_record(run)[1]["train_pair_tokens"]
    assert_same_training_record(run, reference_run)


def test_kill_while_saving_the_model(tmp_path, reference_run):
    run = tmp_path / "run"
    proc = start(run, {"IRPO_FAILPOINT": "before-rename:model"})
    assert proc.wait(timeout=600) == -signal.SIGKILL
    it = run / "iter_0"
    assert not (it / "model").exists() and list(it.glob(".tmp-model-*/model/model.safetensors"))
    finish(run)
    assert_same_result(run, reference_run)
    assert_no_stage_ran_twice(run)
    assert_same_training_record(run, reference_run)


def test_changed_config_is_refused_then_overwritten(tmp_path, reference_run):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)  # a finished run (run directories are relocatable)
    proc = run_cli(*SMALL, "num_samples=3", f"hydra.run.dir={run}")
    assert proc.returncode == 2 and "num_samples" in proc.stderr and "resume=overwrite" in proc.stderr
    proc = run_cli(*SMALL, "num_samples=3", "resume=overwrite", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_jsonl(run / "iter_0" / "generations.jsonl")) == 48 * 3
    # Evaluation of M_0 did not depend on num_samples: it was kept, not redone.
    assert [s for s, e in stage_events(run) if e == "finish"].count("iter_0/eval") == 1


def files_of(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_refused_launch_changes_no_file(tmp_path, reference_run):
    """Refused for a stale config, refused by the lock of a launch still going, and a
    plan-only launch: each leaves every file of the finished run as it was, the recorded
    config included (the report reads the run's alpha from it)."""
    from omegaconf import OmegaConf

    from irpo.run.artifacts import RunDir

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    before = files_of(run)
    proc = run_cli(*SMALL, "alpha=0", f"hydra.run.dir={run}", timeout=120)
    assert proc.returncode == 2 and "alpha" in proc.stderr, proc.stderr[-2000:]
    proc = run_cli(*SMALL, "alpha=0.3", "plan=true", f"hydra.run.dir={run}", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    holder = RunDir(run)
    holder.lock()
    proc = run_cli(*SMALL, f"hydra.run.dir={run}", timeout=120)
    assert proc.returncode == 2 and "in use by another irpo process" in proc.stderr
    assert files_of(run) == before
    assert OmegaConf.load(run / ".hydra" / "config.yaml").alpha == 1.0


def test_kill_during_evaluation(tmp_path, reference_run):
    run = tmp_path / "run"
    proc = start(run, {"IRPO_FAILPOINT": "before-rename:eval_generations.jsonl"})
    assert proc.wait(timeout=600) == -signal.SIGKILL
    # The evaluated shard survived the kill; the rerun reads it instead of decoding again.
    assert list((run / "iter_0" / "eval_shards").glob("shard_*.jsonl"))
    finish(run)
    assert_same_result(run, reference_run)
    assert_no_stage_ran_twice(run)
    assert read_jsonl(run / "iter_0" / "eval_generations.jsonl") == read_jsonl(
        reference_run / "iter_0" / "eval_generations.jsonl"
    )


def test_a_run_directory_has_one_writer(tmp_path):
    from irpo.run.artifacts import RunDir

    run = tmp_path / "run"
    holder = RunDir(run)
    holder.lock()  # as a run still going in this directory would
    proc = run_cli(*SMALL, f"hydra.run.dir={run}", timeout=120)
    assert proc.returncode == 2 and "in use by another irpo process" in proc.stderr
    assert not (run / "iter_0").exists()
