"""What a run shows while a stage works: on rank 0's terminal, bars for the long stages
(generation, evaluation: prompts done and tokens/s) named by iteration and stage; where
stderr is not a terminal (a log file, CI, tests), no bars but a line as each stage starts
and finishes."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("irpo")

# The stage that is running (`iter 1 · generate`), the name of its bars.
_stage: str | None = None


def on_terminal() -> bool:
    from irpo.run.distributed import rank

    return rank() == 0 and sys.stderr.isatty()


@contextmanager
def stage(name: str, runs: bool) -> Iterator[None]:
    """Names the bars drawn inside; where no bar is drawn, says when the stage starts and
    finishes (runs: whether it will do work, rather than find itself finished)."""
    global _stage
    from irpo.run.distributed import rank

    say = runs and rank() == 0 and not sys.stderr.isatty()
    _stage, start = name, time.perf_counter()
    if say:
        log.info(f"{name}: started")
    try:
        yield
    finally:
        _stage = None
    if say:
        log.info(f"{name}: finished in {time.perf_counter() - start:.1f} s")


class Progress:
    """A bar over `total` prompts that also shows the tokens generated per second."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.start, self.tokens = time.perf_counter(), 0
        self.bar = tqdm(
            total=total,
            desc=f"{_stage} · {desc}" if _stage else desc,
            unit="prompt",
            leave=False,
            dynamic_ncols=True,
            disable=not on_terminal(),
        )

    def update(self, prompts: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.set_postfix_str(
            f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):,.0f} tokens/s", refresh=False
        )
        self.bar.update(prompts)

    def close(self) -> None:
        self.bar.close()
