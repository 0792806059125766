"""How many threads torch computes with, and how its idle threads wait, set once per process
before any stage runs.

Training, HF generation and the reference pass all run in this process, so one
`torch.set_num_threads` covers them. On a machine whose cores other jobs also use, an OpenMP
team as wide as the machine waits on its slowest member at every parallel region: a busy
core then stalls every matmul (bench/NOTES.md, "Threads"). So the wait follows how busy the
cores are when the process starts (measured over 0.1 s), which changes speed only; the thread
count follows it only when asked (`num_threads=adaptive`), since it changes the bits."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import MutableMapping

from irpo.run.distributed import ranks_sharing_cores

# libgomp's idle threads spin 300,000 times (~3 ms) before they sleep. On a quiet machine
# that is the fastest wait; on cores another process keeps busy the spin burns the time slice
# a descheduled teammate needs (2x slower training and generation on the tiny model), and
# ~0.1 ms of spinning costs 20-30% there instead, ~10% end to end on a quiet one; sleeping at
# once (OMP_WAIT_POLICY=PASSIVE) pays a wake-up at every op (the default run 29% slower on a
# quiet VM). bench/NOTES.md, "the OpenMP wait".
SPINS_BEFORE_SLEEP = 3000
# Other processes' use of this process's cores, in cores, above which the machine counts as
# shared: a quiet VM shows ~0.01-0.05, one busy process ~1.
SHARED_ABOVE = 0.5


def busy_elsewhere(window_s: float = 0.1, stat: str = "/proc/stat") -> float | None:
    """Cores' worth of time spent on this process's cores by everything else, over a short
    window while this process sleeps; None where the kernel does not say (no /proc/stat, or
    no CPU affinity, as on macOS)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    try:
        before = _core_times(stat)
        time.sleep(window_s)
        after = _core_times(stat)
    except OSError:
        return None
    busy = sum((a[0] - b[0]) for a, b in zip(after, before))
    total = sum((a[1] - b[1]) for a, b in zip(after, before))
    return len(after) * busy / total if total else None


def _core_times(stat: str) -> list[tuple[int, int]]:
    """(busy, all) jiffies of each core in this process's affinity."""
    mine = os.sched_getaffinity(0)
    times = []
    for line in Path(stat).read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in mine:
            user, nice, system, idle, iowait, *rest = (int(x) for x in fields[:8])
            times.append((user + nice + system + sum(rest), user + nice + system + idle + iowait + sum(rest)))
    return times


def choose_wait(env: MutableMapping[str, str], busy: float | None) -> str:
    """How torch's idle OpenMP threads will wait, given the cores other processes keep busy
    (None: unknown): libgomp's own spin on a quiet machine, a brief one on a shared machine or
    where it cannot be told. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. Returns the
    choice in words, for the run's launch record."""
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return f"user's: {' '.join(f'{k}={env[k]}' for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT') if k in env)}"
    if busy is not None and busy < SHARED_ABOVE:
        return f"OpenMP's default spin (cores quiet at start: {busy:.2f} busy elsewhere)"
    env["GOMP_SPINCOUNT"] = str(SPINS_BEFORE_SLEEP)
    seen = "unknown" if busy is None else f"{busy:.2f}"
    return f"GOMP_SPINCOUNT={SPINS_BEFORE_SLEEP} (cores shared at start: {seen} busy elsewhere)"


# What set_wait saw and chose in this process (None: it did not run), for choose_threads and
# the launch record.
busy_at_start: float | None = None
chosen_wait: str | None = None


def set_wait(env: MutableMapping[str, str] = os.environ) -> str:
    """Measures how busy this process's cores are now and chooses the OpenMP wait from it.
    Call it before torch loads: its OpenMP runtime reads the setting once."""
    global busy_at_start, chosen_wait
    busy_at_start = busy_elsewhere()
    chosen_wait = choose_wait(env, busy_at_start)
    return chosen_wait


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(cores: int, ranks: int, busy: float | None) -> int:
    """An equal share of the cores among the ranks that share them (2 ranks x 2 threads on 2
    cores made evaluation 18x slower); given `busy` (None: not asked), a process alone leaves
    out the cores other processes kept busy at start (beside one busy process, 1 thread of 2 trains 2x faster than 2:
    bench/NOTES.md). Ranks of one launch start together and see each other busy, so theirs is
    the share alone."""
    share = max(1, cores // ranks)
    if ranks == 1 and busy is not None and busy >= SHARED_ABOVE:
        share = max(1, share - max(1, round(busy)))
    return share


ADAPTIVE = "adaptive"


def choose_threads(requested: int | str | None, recorded: int | None = None) -> tuple[int, str]:
    """The thread count, and where it came from, for the run's launch record: a count the
    user gave; else the count the run's first launch recorded (`recorded`), since another
    count sums in another order and a resumed model would differ from an uninterrupted one
    in its last bits; else the cores this process may use, shared by a node's ranks,
    whatever else runs; with `adaptive`, fewer when other processes keep cores busy at
    start (about 2x faster beside one busy process, bench/NOTES.md, "Threads", at the price
    of bits that depend on the load)."""
    if requested not in (None, ADAPTIVE):
        return int(requested), "num_threads"
    if recorded:
        return recorded, "recorded by the run's first launch"
    if requested == ADAPTIVE:
        return default_threads(
            available_cores(), ranks_sharing_cores(), busy_at_start
        ), f"adaptive (cores busy elsewhere at start: {'unknown' if busy_at_start is None else f'{busy_at_start:.2f}'})"
    return default_threads(available_cores(), ranks_sharing_cores(), None), "the cores this process may use"


def set_threads(requested: int | str | None) -> int:
    """Sets torch's intra-op threads to `choose_threads`'s count for a fresh run; returns it."""
    import torch  # here, not at import: a config error is reported before torch loads

    n = choose_threads(requested)[0]
    torch.set_num_threads(n)
    return n
