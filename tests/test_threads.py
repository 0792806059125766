"""torch's thread count: an explicit num_threads, else the available cores shared equally by
the torchrun ranks of a node (each rank taking every core oversubscribes them)."""

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
