"""Stopping on a signal without losing work: SIGTERM (Kubernetes, `scancel`, a job's time
limit), SIGINT (Ctrl-C), SIGUSR1 (`srun --signal=USR1@120`) and SIGUSR2 (submitit's).

The handlers, installed once per process around the whole loop, only note the first signal:
Python runs a handler between two bytecodes of the main thread, which may be inside a
collective or a write, so nothing else is safe there. The loop reads the note at safe
points, where every rank agrees on it with one small all-reduce: a training step's end
(after the step's checkpoint, train.StopAtStep), each micro-batch of a reference or
log-prob pass (nothing of the pass is kept), the start of a stage; a rank stops making
generation or evaluation shards as soon as it has the note, and the ranks agree once their
shards are done. There `Interrupted` is raised, the stage's `interrupted` event is written,
and the entry point ends the process (`stop_on_signals`): one line saying what was kept,
after SIGUSR1 or SIGUSR2 under SLURM the job requeued by rank 0, and exit status
128 + the signal on every rank, as a process the signal ended reports it.

A second signal is ignored (a requeue or `scancel` sends SIGTERM after SIGUSR1, and the save
it would cut short is what keeps the work), except SIGINT, which ends the process at once:
a second Ctrl-C is meant to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn

from irpo.run.distributed import max_over_ranks, rank, slurm_job

STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
REQUEUES = (signal.SIGUSR1, signal.SIGUSR2)  # sent ahead of a SLURM job's end, to save and requeue

_noted = 0  # the first stop signal this process received; 0: none


class Interrupted(Exception):
    """A stop signal honoured at a safe point. `kept` is what of the stage in progress is on
    disk for the rerun (`step`: the training step its checkpoint holds; `shards` of `of`
    generation or evaluation shards; nothing: the stage starts again); `stage` and `run_dir`
    are set by loop.run_stage."""

    def __init__(self, signum: int, **kept: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.kept = signum, kept
        self.stage, self.run_dir = "", ""

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def what_was_kept(self) -> str:
        if "step" in self.kept:
            return f"its checkpoint at step {self.kept['step']} and every finished stage"
        if "shards" in self.kept:
            return f"{self.kept['shards']} of its {self.kept['of']} shards and every finished stage"
        return "every finished stage"


def _note(signum: int, frame) -> None:
    global _noted
    if _noted and signum == signal.SIGINT:
        os._exit(128 + signal.SIGINT)
    _noted = _noted or signum


def noted() -> bool:
    """Whether this process received a stop signal (no collective: for a rank alone)."""
    return bool(_noted)


def agreed(due: bool = False) -> tuple[int, bool]:
    """(the stop signal any rank received, 0 for none; whether to checkpoint now: a signal,
    or `due` on rank 0), the same on every rank, from one all-reduce that every rank must
    reach. One integer carries both: a signal outweighs `due`, as a stop saves anyway, and
    ranks that received different signals agree on the largest."""
    word = max_over_ranks(2 * _noted + int(due and rank() == 0))
    return word // 2, word > 0


def stop_if_signalled(**kept: int) -> None:
    """A safe point every rank reaches alike: raises Interrupted if any rank has the note."""
    signum, _ = agreed()
    if signum:
        raise Interrupted(signum, **kept)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """The stop signals noted while the block runs; an Interrupted out of it ends the process
    (`leave`). The handlers that were there before come back when the block ends otherwise;
    leaving, ours stay, so that the SIGTERM a requeue sends finds the stop already taken."""
    global _noted
    _noted = 0
    before = {s: signal.signal(s, _note) for s in STOPS}
    try:
        yield
    except Interrupted as stop:
        leave(stop)
    except BaseException:
        _restore(before)
        raise
    _restore(before)


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def leave(stop: Interrupted) -> NoReturn:
    """Rank 0 requeues the job (SIGUSR1, SIGUSR2 under SLURM) and says in one line what was
    kept and how to go on; every rank exits 128 + the signal."""
    # From here the process only exits. A launcher's SIGTERM to the ranks still leaving
    # (torchrun's agent sends it once one rank has exited) would otherwise meet the default
    # handler, to which Python resets its handlers as it finalizes (not an ignored signal),
    # and the rank would report -15 instead of 128 + the signal.
    for signum in STOPS:
        signal.signal(signum, signal.SIG_IGN)
    if rank() == 0:
        job = slurm_job()
        if stop.signum in REQUEUES and job:
            then = requeue(job)
        else:
            then = f"run the same command with hydra.run.dir={stop.run_dir} to go on from there"
        print(
            f"irpo: stopped by {stop.signal_name} in {stop.stage}: kept {stop.what_was_kept()}; {then}",
            file=sys.stderr,
            flush=True,
        )
    sys.exit(128 + stop.signum)


def requeue(job: str) -> str:
    """`scontrol requeue <job>`: the job goes back to the queue and, started again, resumes in
    its run directory (named after the job, irpo.run.distributed.run_name)."""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`scontrol requeue {job}` could not run ({exc}): requeue or resubmit the job to go on"
    if done.returncode:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        return f"`scontrol requeue {job}` failed ({why}): requeue or resubmit the job to go on"
    return f"requeued SLURM job {job}, which goes on from there in the same run directory"
