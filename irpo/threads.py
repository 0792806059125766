"""How many threads torch computes with, and how its idle threads wait, set once per process
before any stage runs.

Training, HF generation and the reference pass all run in this process, so one
`torch.set_num_threads` covers them. On a machine whose cores other jobs also use, an OpenMP
team as wide as the machine waits on its slowest member at every parallel region: a busy
core then stalls every matmul (bench/NOTES.md, "Threads")."""

from __future__ import annotations

import os
from typing import MutableMapping

# libgomp's idle threads spin 300,000 times (~3 ms) before they sleep: on cores another
# process shares, that spin burns the time slice a descheduled teammate needs (2x slower
# training and generation on the tiny model); sleeping at once (OMP_WAIT_POLICY=PASSIVE)
# pays a wake-up at every op instead (the default run 29% slower on a quiet VM). ~0.1 ms of
# spinning bridges most gaps between ops on a quiet machine and costs 20-30% on a shared one,
# where the default's spin costs 2x (bench/NOTES.md, "the OpenMP wait").
SPINS_BEFORE_SLEEP = 3000


def wait_briefly(env: MutableMapping[str, str] = os.environ) -> None:
    """How torch's idle OpenMP threads wait for the next op. Call it before torch loads: its
    OpenMP runtime reads the setting once. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins."""
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", str(SPINS_BEFORE_SLEEP))


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
    import torch  # here, not at import: a config error is reported before torch loads

    n = num_threads or max(1, available_cores() // ranks_sharing_cores())
    torch.set_num_threads(n)
    return n
