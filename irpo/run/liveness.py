"""Whether the other ranks of a launch are still alive, apart from the stage timeout.

A collective waits `trainer.timeout_minutes` (hours: another replica may be generating),
so a rank that is frozen (SIGSTOP, a hung driver) or gone, or a launcher that died before
its workers met, would hold every other rank for that long. Each rank runs a watchdog
thread instead: it beats a counter in the launch's rendezvous store (the TCP store torchrun's
agent, or rank 0 under srun, serves) and watches the others' counters. A counter that has
not moved for `trainer.liveness_seconds`, or a store that has not answered for that long,
ends the process with one line naming the silent rank. The beats come from a thread, so a
rank busy for hours in one stage, or waiting on a barrier, still beats.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta


class Watchdog:
    """Started before the process group is joined (so that a launcher gone before the
    ranks met is noticed too), stopped when this rank leaves it."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, seconds: float, attempt: int = 0) -> None:
        self.host, self.port, self.rank, self.world_size, self.seconds = host, port, rank, world_size, seconds
        # The agent's store outlives restarted workers: keys of an earlier attempt are not this one's.
        self.prefix = f"irpo/liveness/{attempt}/"
        self._stop = threading.Event()
        self._store = None
        self._thread = threading.Thread(target=self._watch, name="irpo-liveness", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        """This rank is done: the others stop watching it."""
        self._stop.set()
        self._thread.join()
        if self._store is not None:
            try:
                self._store.set(f"{self.prefix}done/{self.rank}", "1")
            except Exception:  # noqa: BLE001 - the store may already be gone with the launch
                pass

    def _watch(self) -> None:
        from torch.distributed import TCPStore

        try:
            self._store = TCPStore(self.host, self.port, is_master=False, timeout=timedelta(seconds=self.seconds))
        except Exception as exc:  # noqa: BLE001 - whatever the reason, no store means no launch
            end(
                f"rank {self.rank}: the launch's rendezvous store at {self.host}:{self.port} did not answer within "
                f"{self.seconds:g} s ({first_line(exc)}); its launcher is gone (trainer.liveness_seconds)"
            )
        period = min(5.0, self.seconds / 4)
        others = [r for r in range(self.world_size) if r != self.rank]
        seen = {r: (-1, time.monotonic()) for r in others}  # rank: (last count, when it last moved)
        answered = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            try:
                self._store.add(f"{self.prefix}beat/{self.rank}", 1)
                for r in others:
                    if r not in seen or self._store.check([f"{self.prefix}done/{r}"]):
                        seen.pop(r, None)
                        continue
                    count = self._store.add(f"{self.prefix}beat/{r}", 0)
                    if count != seen[r][0]:
                        seen[r] = (count, now)
                    elif now - seen[r][1] > self.seconds:
                        end(
                            f"rank {r} has sent no heartbeat for {self.seconds:g} s (stopped, hung or dead): rank {self.rank} ends "
                            "the launch instead of waiting trainer.timeout_minutes (trainer.liveness_seconds sets this limit)"
                        )
                answered = now
            except Exception as exc:  # noqa: BLE001 - a store that stopped answering
                if now - answered > self.seconds:
                    end(
                        f"rank {self.rank}: the launch's rendezvous store at {self.host}:{self.port} has not answered for "
                        f"{self.seconds:g} s ({first_line(exc)}); its launcher or rank 0 is gone (trainer.liveness_seconds)"
                    )


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def end(message: str) -> None:
    """Ends this process at once: its main thread may be blocked in a collective that
    would never return."""
    print(f"irpo: error: {message}", file=sys.stderr, flush=True)
    os._exit(1)
