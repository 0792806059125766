"""torch's thread count: an explicit num_threads, else the available cores shared equally by
the torchrun ranks of a node (each rank taking every core oversubscribes them); and how its
idle OpenMP threads wait (a brief spin, set before torch loads)."""

import os
import subprocess
import sys

import pytest
import torch

from irpo import threads


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores,local_ranks,want", [(8, None, 8), (8, "2", 4), (8, "8", 1), (2, "4", 1), (6, "4", 1)])
def test_default_shares_the_cores_among_a_nodes_ranks(monkeypatch, cores, local_ranks, want):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    if local_ranks is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert threads.set_threads(None) == want == torch.get_num_threads()


def test_explicit_count_wins(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.set_threads(1) == 1 == torch.get_num_threads()


@pytest.mark.parametrize("given,want", [
    ({}, {"GOMP_SPINCOUNT": str(threads.SPINS_BEFORE_SLEEP)}),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ({"GOMP_SPINCOUNT": "0"}, {"GOMP_SPINCOUNT": "0"}),
])
def test_a_brief_spin_unless_the_user_chose_a_wait(given, want):
    env = dict(given)
    threads.wait_briefly(env)
    assert env == want


def test_python_m_irpo_sets_the_wait_before_torch_loads():
    """OpenMP reads the wait once, when torch loads it: set later, it does nothing."""
    probe = "import os, sys, irpo.__main__; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == [str(threads.SPINS_BEFORE_SLEEP), "False"]
