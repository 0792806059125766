"""How many threads torch computes with, set once per process before any stage runs.

Training, HF generation and the reference pass all run in this process, so one
`torch.set_num_threads` covers them. On a machine whose cores other jobs also use, an OpenMP
team as wide as the machine waits on its slowest member at every parallel region: a busy
core then stalls every matmul (bench/NOTES.md, "Threads")."""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ranks_sharing_cores() -> int:
    """Processes of this launch that share this process's cores: torchrun's ranks on this
    node all see every core (srun binds each task to its own cores, so its affinity is
    already this task's share)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def set_threads(num_threads: int | None) -> int:
    """Sets torch's intra-op threads (None: an equal share of the available cores among the
    ranks that share them: 2 ranks x 2 threads on 2 cores made evaluation 18x slower);
    returns the count."""
    n = num_threads or max(1, available_cores() // ranks_sharing_cores())
    torch.set_num_threads(n)
    return n
