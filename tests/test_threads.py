"""torch's thread count: an explicit num_threads, else the available cores shared equally by
the torchrun ranks of a node (each rank taking every core oversubscribes them); and how its
idle OpenMP threads wait (chosen from how busy the cores are, before torch loads)."""

import os
import subprocess
import sys

import pytest
import torch

from irpo.run import threads


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores,local_ranks,want", [(8, None, 8), (8, "2", 4), (8, "8", 1), (2, "4", 1), (6, "4", 1)])
def test_default_shares_the_cores_among_a_nodes_ranks(monkeypatch, cores, local_ranks, want):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_at_start", 0.02)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    if local_ranks is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert threads.set_threads(None) == want == torch.get_num_threads()


@pytest.mark.parametrize(
    "cores,ranks,busy,want",
    [
        (2, 1, 0.03, 2),
        (2, 1, None, 2),  # quiet, or not known: every core
        (2, 1, 1.0, 1),
        (2, 1, 0.6, 1),
        (8, 1, 2.6, 5),
        (1, 1, 3.0, 1),  # the cores left free
        (8, 2, 1.0, 4),  # a launch's ranks see each other starting: the equal share alone
    ],
)
def test_a_process_alone_leaves_out_the_cores_busy_at_start(cores, ranks, busy, want):
    assert threads.default_threads(cores, ranks, busy) == want


def test_explicit_count_wins(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.set_threads(1) == 1 == torch.get_num_threads()
    assert threads.choose_threads("3", recorded=2) == (3, "num_threads")


@pytest.mark.parametrize("requested", [None, "adaptive"])
def test_a_resume_keeps_the_count_its_run_recorded(monkeypatch, requested):
    monkeypatch.setattr(threads, "available_cores", lambda: 1)
    assert threads.choose_threads(requested, recorded=2) == (2, "recorded by the run's first launch")


def test_only_adaptive_follows_the_load(monkeypatch):
    """The default count is the same beside a busy process and on a quiet machine: a run's
    bits do not depend on what else ran when it started."""
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "busy_at_start", 1.0)
    assert threads.choose_threads(None)[0] == 2
    assert threads.choose_threads("adaptive")[0] == 1


@pytest.mark.parametrize(
    "given,busy,want",
    [
        ({}, 0.03, {}),  # quiet: OpenMP's own spin, as a run without irpo's choice
        ({}, 1.0, {"GOMP_SPINCOUNT": str(threads.SPINS_BEFORE_SLEEP)}),  # a busy process beside it
        ({}, None, {"GOMP_SPINCOUNT": str(threads.SPINS_BEFORE_SLEEP)}),  # cannot tell: the safe one
        ({"OMP_WAIT_POLICY": "PASSIVE"}, 1.0, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ({"GOMP_SPINCOUNT": "0"}, 0.0, {"GOMP_SPINCOUNT": "0"}),
    ],
)
def test_the_wait_follows_how_busy_the_cores_are_unless_the_user_chose_one(given, busy, want):
    env = dict(given)
    said = threads.choose_wait(env, busy)
    assert env == want
    assert ("user's" in said) == bool(given)


def fake_stat(path, cores):
    """/proc/stat with the given (busy, idle) jiffies per core, user and system split."""
    total = [sum(x) for x in zip(*cores)]
    lines = [f"cpu  {total[0] // 2} 0 {total[0] - total[0] // 2} {total[1]} 0 0 0 0 0 0"]
    lines += [f"cpu{i} {b // 2} 0 {b - b // 2} {idle} 0 0 0 0 0 0" for i, (b, idle) in enumerate(cores)]
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 42"]) + "\n")


def test_busy_elsewhere_counts_the_cores_of_this_process(tmp_path, monkeypatch):
    """Busy jiffies over all jiffies of this process's cores, times their count: one core
    fully busy and one idle is one core busy; a core outside the affinity does not count."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    fake_stat(stat, [(500, 900), (20, 1300), (7, 7)])
    # while the window passes, core 0 is busy throughout, core 1 idle, core 2 (not ours) busy
    monkeypatch.setattr(threads.time, "sleep", lambda s: fake_stat(stat, [(600, 900), (20, 1400), (107, 7)]))
    assert threads.busy_elsewhere(stat=str(stat)) == pytest.approx(1.0)


def test_busy_elsewhere_is_unknown_without_proc_stat(tmp_path):
    assert threads.busy_elsewhere(window_s=0, stat=str(tmp_path / "absent")) is None


def test_busy_elsewhere_is_unknown_without_cpu_affinity(tmp_path, monkeypatch):
    """macOS has no sched_getaffinity: `python -m irpo` must still start there."""
    stat = tmp_path / "stat"
    fake_stat(stat, [(0, 0)])
    monkeypatch.delattr(threads.os, "sched_getaffinity")
    assert threads.busy_elsewhere(window_s=0, stat=str(stat)) is None


def test_python_m_irpo_sets_the_wait_before_torch_loads():
    """OpenMP reads the wait once, when torch loads it: set later, it does nothing. Beside a
    busy process the brief spin is chosen, before torch is imported, and the busy core is seen
    (set_threads leaves it out)."""
    probe = (
        "import os, sys, irpo.__main__, irpo.run.threads as t; "
        "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules, t.chosen_wait.startswith('GOMP'), t.busy_at_start >= 0.5)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
    finally:
        busy.kill()
    assert out == [str(threads.SPINS_BEFORE_SLEEP), "False", "True", "True"]
