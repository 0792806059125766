"""A stop signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) sent while the CLI trains, generates or
scores: the process saves what it can at the next safe point, writes the `interrupted`
event, says in one line what it kept, exits 128 + the signal (after SIGUSR1 under SLURM,
the job requeued), and the rerun ends where an uninterrupted run does, to the bit. The
signal comes from a failpoint (irpo/run/failpoints.py) at a chosen step, shard or stage."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file
from test_distributed import ENV as TORCHRUN_ENV
from test_distributed import SMALL as TORCHRUN_SMALL
from test_resume import assert_no_stage_ran_twice, training_record

import irpo
from irpo.planning import capacity, sizing
from irpo.run.artifacts import read_jsonl
from irpo.spec import build

SMALL = [
    "iterations=1",
    "task.train_size=48",
    "task.test_size=16",
    "num_samples=4",
    "eval.maj_k=0",
    "shard_size=16",
    "trainer.batch_size=8",
    "trainer.checkpoint_every_n_steps=100",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "logger=none",
]
ENV = {**os.environ, "WANDB_SILENT": "true"}
ENV.pop("HYDRA_FULL_ERROR", None)


def launch(run, *overrides, env=None, torchrun=False):
    """The CLI (or torchrun over 2 ranks) on the small run; its CompletedProcess. The timeout
    is the test that no rank hangs."""
    command = [sys.executable, "-m", "irpo", *SMALL]
    if torchrun:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "irpo",
            *TORCHRUN_SMALL,
            "iterations=1",
            "trainer.checkpoint_every_n_steps=100",
        ]
    base = TORCHRUN_ENV if torchrun else ENV
    return subprocess.run(
        [*command, *overrides, f"hydra.run.dir={run}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **(env or {})},
    )


def finish(run, *overrides, torchrun=False):
    proc = launch(run, *overrides, torchrun=torchrun)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def signalled(run, point, signame, *overrides, env=None, torchrun=False):
    """The launch, sent `signame` at the failpoint `point`: its stderr, once it ended."""
    proc = launch(
        run,
        *overrides,
        env={"IRPO_FAILPOINT": point, "IRPO_FAILPOINT_SIGNAL": signame, **(env or {})},
        torchrun=torchrun,
    )
    if torchrun:
        # torchrun reports a failed worker and exits 1; each worker's own status is in its summary
        assert proc.returncode == 1 and proc.stderr.count(f"exitcode  : {128 + getattr(signal, signame)}") == 2, (
            proc.stderr[-3000:]
        )
    else:
        assert proc.returncode == 128 + getattr(signal, signame), proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("irpo: ")]
    assert len(lines) == 1 and lines[0].startswith(f"irpo: stopped by {signame} in "), proc.stderr[-3000:]
    assert proc.stderr.count("Traceback") == (1 if torchrun else 0), proc.stderr[
        -3000:
    ]  # torchrun's own ChildFailedError
    return lines[0]


def interrupted(run):
    events = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "interrupted"]
    assert len(events) == 1
    return {k: v for k, v in events[0].items() if k != "time"}


def assert_same_run(run, reference):
    """The rerun ended where the uninterrupted run did, to the bit: samples, pairs, M_1's
    weights, every logged training step and the evaluation of M_1."""
    for name in ("iter_0/generations.jsonl", "iter_0/pairs.jsonl", "iter_1/eval_generations.jsonl"):
        assert read_jsonl(run / name) == read_jsonl(reference / name), name
    ours, theirs = (
        load_file(run / "iter_0/model/model.safetensors"),
        load_file(reference / "iter_0/model/model.safetensors"),
    )
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    (rows, metrics), (want_rows, want_metrics) = training_record(run), training_record(reference)
    assert rows == want_rows and metrics == want_metrics
    assert not list(run.rglob(".tmp-*"))
    assert_no_stage_ran_twice(run)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    return finish(tmp_path_factory.mktemp("whole") / "run")


@pytest.mark.slow
def test_sigterm_while_training_keeps_the_step_and_exits_143(tmp_path, reference_run):
    run = tmp_path / "run"
    line = signalled(run, "train-step:2", "SIGTERM")
    assert interrupted(run) == {"stage": "iter_0/train", "event": "interrupted", "signal": "SIGTERM", "step": 2}
    assert (
        torch.load(run / "iter_0/train/last.ckpt", weights_only=True)["global_step"] == 2
    )  # the only checkpoint: every 100 steps
    assert "its checkpoint at step 2" in line and f"hydra.run.dir={run}" in line
    # the size plan=true gives a checkpoint (irpo/planning/sizing.py) is what one weighs
    cfg = irpo.compose(SMALL)
    arch = capacity.resolve_arch(build(cfg).model)
    planned = sizing.checkpoint_bytes(arch, capacity.training(build(cfg), arch, 1, 1))
    assert (run / "iter_0/train/last.ckpt").stat().st_size == pytest.approx(planned, rel=0.02)
    finish(run)
    assert_same_run(run, reference_run)


@pytest.mark.slow
def test_sigint_while_generating_keeps_the_finished_shards_and_exits_130(tmp_path, reference_run):
    run = tmp_path / "run"
    line = signalled(
        run, "shard:generations:1", "SIGINT"
    )  # sent as shard 1 starts: it is finished, shard 2 is not begun
    assert interrupted(run) == {
        "stage": "iter_0/generate",
        "event": "interrupted",
        "signal": "SIGINT",
        "shards": 2,
        "of": 3,
    }
    assert "2 of its 3 shards" in line
    finish(run)
    assert_same_run(run, reference_run)


@pytest.fixture
def slurm(tmp_path):
    """This process in SLURM job 4242, with an `scontrol` that records its arguments."""
    stub = tmp_path / "bin" / "scontrol"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    stub.chmod(0o755)
    return {"SLURM_JOB_ID": "4242", "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}, tmp_path / "scontrol.log"


@pytest.mark.slow
def test_sigusr1_while_generating_under_slurm_requeues_the_job(tmp_path, reference_run, slurm):
    env, log = slurm
    run = tmp_path / "run"
    line = signalled(run, "shard:generations:1", "SIGUSR1", env=env)
    assert interrupted(run)["shards"] == 2
    assert log.read_text() == "requeue 4242\n"  # once
    assert "requeued SLURM job 4242" in line
    finish(run)
    assert_same_run(run, reference_run)


@pytest.mark.slow
def test_sigusr1_during_the_reference_pass_drops_the_pass(tmp_path, reference_run):
    """Outside SLURM SIGUSR1 stops as SIGTERM does; the pass stops at its next micro-batch
    and is scored again by the rerun."""
    run = tmp_path / "run"
    line = signalled(run, "stage:iter_0/reference", "SIGUSR1")
    assert interrupted(run) == {"stage": "iter_0/reference", "event": "interrupted", "signal": "SIGUSR1"}
    assert not (run / "iter_0/reference_logps.safetensors").exists() and "kept every finished stage" in line
    finish(run)
    assert_same_run(run, reference_run)


@pytest.mark.slow
def test_a_checkpoint_by_time_is_what_a_hard_kill_resumes_from(tmp_path, reference_run):
    """trainer.checkpoint_every_seconds small enough to save at every step's end: killed
    (SIGKILL, no handler runs) at step 3's end, before its checkpoint, the run resumes from
    step 2's. The key is no stage dependency: the rerun goes on without it."""
    run = tmp_path / "run"
    proc = launch(run, "trainer.checkpoint_every_seconds=0.001", env={"IRPO_FAILPOINT": "train-step:3"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert torch.load(run / "iter_0/train/last.ckpt", weights_only=True)["global_step"] == 2
    finish(run)
    resumed = json.loads((run / "manifest.json").read_text())["stages"]["iter_0/train"]["tokens"]
    assert 0 < resumed < training_record(run)[1]["train_pair_tokens"]  # went on from step 2, not from 0
    assert_same_run(run, reference_run)


@pytest.fixture(scope="module")
def torchrun_references(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    return {s: finish(root / s, f"trainer={s}", "trainer.micro_batch_size=1", torchrun=True) for s in ("ddp", "fsdp")}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sigterm_to_every_rank_under_torchrun(tmp_path, torchrun_references, strategy):
    """Both workers signalled, as srun signals every task: they agree at the step's end, save
    the step (collectively under fsdp), and each exits 143; rank 0 alone speaks."""
    run = tmp_path / "run"
    overrides = (f"trainer={strategy}", "trainer.micro_batch_size=1")
    signalled(run, "train-step:2", "SIGTERM", *overrides, torchrun=True)
    assert interrupted(run)["step"] == 2
    finish(run, *overrides, torchrun=True)
    reference = torchrun_references[strategy]
    ours, theirs = (
        load_file(run / "iter_0/model/model.safetensors"),
        load_file(reference / "iter_0/model/model.safetensors"),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert training_record(run) == training_record(reference)
    assert read_jsonl(run / "iter_1/eval_generations.jsonl") == read_jsonl(reference / "iter_1/eval_generations.jsonl")


def test_a_second_signal_is_ignored_and_a_second_sigint_ends_at_once():
    script = (
        "import os, signal, time\n"
        "from irpo.run import preemption\n"
        "with preemption.stop_on_signals():\n"
        "    for s in (signal.SIGTERM, signal.SIGTERM, signal.SIGUSR1):\n"
        "        os.kill(os.getpid(), s)\n"
        "    assert preemption.agreed() == (signal.SIGTERM, True), preemption.agreed()\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 130 and not proc.stderr, proc.stderr


def test_checkpoint_every_seconds_must_be_positive(cli):
    proc = cli("trainer.checkpoint_every_seconds=0", "plan=true")
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "irpo: error: trainer.checkpoint_every_seconds must be > 0 or null, got 0.0"
    )


def test_the_slurm_job_requeue_names(monkeypatch):
    from irpo.run.distributed import slurm_job

    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert slurm_job() == "17"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "16")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm_job() == "16_1"  # as scontrol names an array's task
