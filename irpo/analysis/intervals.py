"""Numbers over seeds, pure: a mean ± std (Stat), and a mean difference paired by seed with its
95% Student-t interval (Interval). No records, no files, no prose: the claims decide with
these and the writers print them.

(Named intervals, not statistics, so that it never reads as the standard library's module,
which the analysis imports beside it.)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}" if self.n > 1 else f"{100 * self.mean:.1f}"


def stat(values: list[float]) -> Stat | None:
    """Mean ± std of the numbers among `values` (None and NaN left out); None when there are none."""
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (p in (0.5, 1)), by bisection on its CDF: the CDF is 1/2 plus the
    density integrated from 0 (Simpson's rule; the density is smooth and the interval short)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float, steps: int = 2000) -> float:
        h = x / steps
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Interval:
    """A mean difference over paired seeds and its 95% t-interval (none from one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def verdict(self) -> bool | None:
        """True when the interval lies above 0, False when it holds 0 or lies below, None
        when there is no interval."""
        return None if self.low is None else self.low > 0


def paired(differences: list[float]) -> Interval | None:
    """The mean of per-seed differences with its 95% interval (t with n - 1 degrees of freedom)."""
    if not differences:
        return None
    n, mean = len(differences), statistics.fmean(differences)
    if n == 1:
        return Interval(mean, None, None, 1)
    half = t_quantile(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
