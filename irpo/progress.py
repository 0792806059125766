"""Progress bars for the long stages (generation, evaluation): prompts done and tokens/s, on
rank 0's terminal only; nothing is drawn when stderr is not a terminal (logs, CI, tests)."""

from __future__ import annotations

import os
import sys
import time


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


class Progress:
    """A bar over `total` prompts that also shows the tokens generated per second."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.start, self.tokens = time.perf_counter(), 0
        self.bar = tqdm(total=total, desc=desc, unit="prompt", leave=False, dynamic_ncols=True,
                        disable=not (is_rank_zero() and sys.stderr.isatty()))

    def update(self, prompts: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.set_postfix_str(f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):,.0f} tokens/s", refresh=False)
        self.bar.update(prompts)

    def close(self) -> None:
        self.bar.close()
