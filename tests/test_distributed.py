"""The loop under torchrun: 2 CPU ranks (gloo) with trainer=ddp and trainer=fsdp against
one process on the same global batch; a rank killed mid-training and the same command
launched again; the fsdp-trained M_1 loaded by transformers; LoRA; what differs by rank."""

import csv
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file

from irpo.run.artifacts import read_jsonl
from irpo.run.distributed import owned_shards
from irpo.training.data import EpochSampler

SMALL = [
    "iterations=2",
    "task.train_size=32",
    "task.test_size=16",
    "num_samples=4",
    "eval.maj_k=0",
    "shard_size=8",
    "trainer.batch_size=4",
    "trainer.precision=32-true",
    "trainer.checkpoint_every_n_steps=2",
    "trainer.log_every_n_steps=1",
    "trainer.progress_bar=false",
    "logger=none",
]
# One thread per rank: 2 ranks on 2 cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
# Summing over 2 ranks instead of 1 reorders float additions: M_1 differs by rounding only.
LOSS_TOL = 1e-4


def torchrun(run, *overrides):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "irpo",
            *SMALL,
            *overrides,
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def finish_torchrun(run, *overrides):
    proc = torchrun(run, *overrides)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process, and 2 ranks with each strategy, on the same config (module-wide)."""
    root = tmp_path_factory.mktemp("spmd")
    one = root / "one"
    proc = run_cli(*SMALL, f"hydra.run.dir={one}", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One pair per forward: each rank accumulates two micro-batches per step (gradients reduced
    # at the last), the one process one of four pairs: the same step.
    return {
        "one": one,
        "ddp": finish_torchrun(root / "ddp", "trainer=ddp", "trainer.micro_batch_size=1"),
        "fsdp": finish_torchrun(root / "fsdp", "trainer=fsdp", "trainer.micro_batch_size=1"),
    }


def losses(run, t=0):
    with open(run / f"iter_{t}/train/metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def weights(run, t=0):
    return load_file(run / f"iter_{t}/model/model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_run_the_loop_as_one_process_does(runs, strategy):
    one, many = runs["one"], runs[strategy]
    # Iteration 0 samples from M_0 with the same per-shard seeds: the same rows.
    for name in ("eval_generations.jsonl", "generations.jsonl", "pairs.jsonl"):
        assert read_jsonl(many / "iter_0" / name) == read_jsonl(one / "iter_0" / name), name
    ref_one, ref_many = (
        load_file(one / "iter_0/reference_logps.safetensors"),
        load_file(many / "iter_0/reference_logps.safetensors"),
    )
    torch.testing.assert_close(ref_many["chosen"], ref_one["chosen"], equal_nan=True, atol=1e-5, rtol=0)
    # The same global batch per step: the same losses, up to the order of float sums.
    assert losses(many).keys() == losses(one).keys() and len(losses(one)) > 2
    for step, loss in losses(one).items():
        assert losses(many)[step] == pytest.approx(loss, abs=LOSS_TOL)
    a, b = weights(one), weights(many)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
    # Later iterations may sample differently (M_1 differs by rounding): accuracies agree
    # within two binomial standard errors of 16 problems.
    for t in (1, 2):
        x, y = (json.loads((r / f"iter_{t}/eval.json").read_text())["test_accuracy"] for r in (one, many))
        assert abs(x - y) <= 2 * math.sqrt(2 * 0.25 / 16)
    # One run directory, written by rank 0 alone: one .hydra, no leftovers.
    assert (many / ".hydra/config.yaml").exists() and not list(many.rglob(".tmp-*"))
    assert len(read_jsonl(many / "metrics.jsonl")) == 3
    finished = [e["stage"] for e in read_jsonl(many / "events.jsonl") if e["event"] == "finish"]
    assert (
        len(finished) == len(set(finished)) == 13
    )  # 2 iterations x (eval, generate, pairs, reference, train, logps) + the last eval


@pytest.mark.slow
def test_fsdp_model_loads_in_transformers(runs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(runs["fsdp"] / "iter_1/model", use_safetensors=True)
    trained = weights(runs["fsdp"], 1)
    for name, p in model.state_dict().items():
        if name in trained:
            torch.testing.assert_close(p, trained[name])


def rank_pid(torchrun_pid, rank):
    """The pid of a torchrun worker by its RANK."""
    for pid in map(
        int, subprocess.run(["pgrep", "-P", str(torchrun_pid)], capture_output=True, text=True).stdout.split()
    ):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except FileNotFoundError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
def test_killed_rank_resumes_from_the_sharded_checkpoint(tmp_path, runs):
    run = tmp_path / "run"
    proc = torchrun(run, "trainer=fsdp", "iterations=1")
    last = run / "iter_0/train/last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and last.is_dir() and not (run / "iter_0/model").exists()
    step = torch.load(last / "meta.pt", weights_only=True)["global_step"]
    finish_torchrun(run, "trainer=fsdp", "iterations=1")
    # Went on from the checkpoint, not from step 0: the relaunch trained on fewer pair-tokens
    # than the whole training did; and its metrics.csv kept the steps before the kill.
    resumed = json.loads((run / "manifest.json").read_text())["stages"]["iter_0/train"]["tokens"]
    assert step > 0 and 0 < resumed < json.loads((run / "iter_0/metrics.json").read_text())["train_pair_tokens"]
    assert losses(run) == pytest.approx(losses(runs["fsdp"]), abs=LOSS_TOL)
    a, b = weights(runs["fsdp"]), weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
    finished = [e["stage"] for e in read_jsonl(run / "events.jsonl") if e["event"] == "finish"]
    assert len(finished) == len(set(finished)) and not list(run.rglob(".tmp-*"))


def test_a_refused_torchrun_launch_changes_no_file(tmp_path, runs):
    """Under torchrun as in one process: a stale config, or a run directory held by
    another launch, is refused on every rank and leaves every file as it was."""
    import shutil

    from irpo.run.artifacts import RunDir

    run = tmp_path / "run"
    shutil.copytree(runs["ddp"], run)
    files = lambda: {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}  # noqa: E731
    before = files()
    _, err = (proc := torchrun(run, "trainer=ddp", "trainer.micro_batch_size=1", "alpha=0")).communicate(timeout=300)
    assert proc.returncode != 0 and "other values of alpha" in err, err[-2000:]
    assert err.count("irpo: error:") == 1 and "exitcode  : 2" in err  # said once, by rank 0; every rank exits 2
    holder = RunDir(run)
    holder.lock()  # as a launch still going would
    _, err = (proc := torchrun(run, "trainer=ddp", "trainer.micro_batch_size=1")).communicate(timeout=300)
    assert proc.returncode != 0 and "in use by another irpo process" in err, err[-2000:]
    assert files() == before


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, seconds):
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline:
        time.sleep(0.1)
    return predicate()


def test_a_frozen_rank_ends_the_launch_in_seconds_not_hours(tmp_path):
    """Rank 1 stopped (SIGSTOP) mid-run: rank 0 would wait trainer.timeout_minutes (720) in
    its next collective; its watchdog ends it after trainer.liveness_seconds, naming rank 1."""
    run = tmp_path / "run"
    proc = torchrun(run, "trainer=ddp", "iterations=1", "trainer.liveness_seconds=20")
    try:
        assert wait_for(lambda: (run / "events.jsonl").exists() or proc.poll() is not None, 300), (
            "the launch never started"
        )
        ranks = [rank_pid(proc.pid, 0), rank_pid(proc.pid, 1)]
        os.kill(ranks[1], signal.SIGSTOP)
        stopped = time.time()
        assert wait_for(lambda: not alive(ranks[0]), 60), "rank 0 still waits 60 s after rank 1 froze"
        assert time.time() - stopped >= 20  # not before the limit
        os.kill(ranks[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "irpo: error: rank 1 has sent no heartbeat for 20 s" in err, err[-2000:]


def test_a_launch_whose_agent_died_before_its_ranks_met_ends(tmp_path):
    """torchrun's agent killed as its workers start: they would wait trainer.timeout_minutes
    for its rendezvous store; they end after trainer.liveness_seconds."""
    proc = torchrun(tmp_path / "run", "trainer=ddp", "iterations=1", "trainer.liveness_seconds=20")
    workers = []
    try:
        assert wait_for(lambda: rank_pid(proc.pid, 0) and rank_pid(proc.pid, 1), 120)
        workers = [rank_pid(proc.pid, 0), rank_pid(proc.pid, 1)]
        proc.kill()
        proc.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 120), (
            "the workers outlived their launcher by 2 minutes"
        )
        err = proc.stderr.read()
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert "the launch's rendezvous store" in err and "answer" in err and "20 s" in err, err[-2000:]


@pytest.mark.slow
def test_lora_trains_adapters_and_saves_a_full_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    proc = run_cli(
        *SMALL, "iterations=1", "model.lora.r=4", "model.lora.target_modules=[q_proj,v_proj]", f"hydra.run.dir={run}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m0 = load_file(ROOT / "irpo/models/tiny_m0/model.safetensors")
    m1 = weights(run)
    assert m1.keys() == m0.keys()  # merged: no adapter weights left
    changed = {k for k in m0 if not torch.equal(m0[k], m1[k])}
    assert changed and all(".q_proj." in k or ".v_proj." in k for k in changed)
    AutoModelForCausalLM.from_pretrained(run / "iter_0/model", use_safetensors=True)


def test_deepspeed_without_deepspeed_fails_in_one_line():
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    proc = run_cli("trainer=deepspeed_zero3", "logger=none")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "irpo: error: trainer.strategy=deepspeed_zero3 needs DeepSpeed, which is not installed: pip install -e '.[deepspeed]'"
    ]


def test_several_devices_need_a_launcher():
    proc = run_cli("trainer=ddp", "trainer.devices=2", "logger=none")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "irpo: error: trainer.devices=2 x trainer.num_nodes=1 in one process: start one process per device with "
        "torchrun --nproc-per-node=<devices> -m irpo ... (or srun), which sets both"
    ]


def test_shards_go_round_robin_to_replica_leaders():
    # 4 ranks, tensor-parallel 2: replicas {0,1} and {2,3}; ranks 1 and 3 drive no engine.
    assert owned_shards(5, 2, 0, 4) == [0, 2, 4] and owned_shards(5, 2, 2, 4) == [1, 3]
    assert owned_shards(5, 2, 1, 4) == owned_shards(5, 2, 3, 4) == []
    assert owned_shards(3, 1, 0, 1) == [0, 1, 2]


@pytest.mark.parametrize("size,world", [(10, 2), (7, 2), (9, 4), (1, 2)])
def test_ranks_batches_are_the_one_process_order(size, world):
    whole = list(EpochSampler(size, seed=3))
    parts = [list(EpochSampler(size, seed=3, rank=r, world=world)) for r in range(world)]
    assert {len(p) for p in parts} == {math.ceil(size / world)}
    # The first k items of all ranks are the first k·world of one process (padded from the start).
    padded = (whole * world)[: len(parts[0]) * world]
    for k in range(1, len(parts[0]) + 1):
        assert sorted(i for p in parts for i in p[:k]) == sorted(padded[: k * world])
    # A resumed rank skips what it trained on.
    assert list(EpochSampler(size, seed=3, skip=1, rank=1, world=world)) == parts[1][1:]
