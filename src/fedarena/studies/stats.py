"""Statistics of a study: intervals over seeds, paired comparisons, ranks with ties.

Runs of a sweep that differ only in the defense share their seed: the same partition,
the same malicious clients, the same cohorts (one seed is split into independent
streams, see :mod:`fedarena.core.seeds`). So two defenses are compared on the
*differences* of their metric seed by seed, which removes the seed-to-seed spread both
share; the interval is Student's t on those paired differences (scipy.stats.t):

    d_s = x_s - b_s,   mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)

An interval on a bounded metric (an accuracy in [0, 1]) is shown as ``m±h`` only while
``[m - h, m + h]`` lies inside the range; otherwise as ``m [lo, hi]`` clipped to it, so
no printed bound lies outside what the metric can take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

#: what the report's legends say about the intervals
INTERVAL_METHOD = "95% Student-t interval over seeds"
PAIRED_METHOD = (
    "paired 95% Student-t interval on the per-seed differences (same seeds: same partition, attackers, cohorts)"
)


@dataclass(frozen=True)
class Interval:
    """A mean and its interval ``[lo, hi]`` (NaN bounds when there is no spread estimate)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


def _finite(values: Iterable[Optional[float]]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    return x[np.isfinite(x)]


def t_interval(values: Iterable[Optional[float]], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of ``values`` (None/NaN dropped); one value: NaN bounds."""
    x = _finite(values)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if len(x) == 1:
        return Interval(m, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(m, m - half, m + half, len(x))


def paired_interval(x: Mapping[object, float], base: Mapping[object, float], level: float = 0.95) -> Interval:
    """Mean of ``x[s] - base[s]`` over the seeds ``s`` both have (finite values), with the
    Student-t interval of those paired differences."""
    common = [s for s in x if s in base]
    d = [
        x[s] - base[s]
        for s in common
        if x[s] is not None and base[s] is not None and math.isfinite(x[s]) and math.isfinite(base[s])
    ]
    return t_interval(d, level)


def fmt_bounded(iv: Interval, lo: float = 0.0, hi: float = 1.0, scale: float = 100.0, digits: int = 1) -> str:
    """``m±h`` while the interval lies in ``[lo, hi]``; else ``m [a, b]`` clipped to the range;
    ``m`` alone without an interval; ``-`` without a value."""
    if math.isnan(iv.mean):
        return "-"
    m = f"{scale * iv.mean:.{digits}f}"
    if math.isnan(iv.lo):
        return m
    if iv.lo >= lo and iv.hi <= hi:
        return f"{m}±{scale * iv.half:.{digits}f}"
    a, b = max(iv.lo, lo), min(iv.hi, hi)
    return f"{m} [{scale * a:.{digits}f}, {scale * b:.{digits}f}]"


def fmt_diff(iv: Interval, bound: float = 1.0, scale: float = 100.0, digits: int = 1) -> str:
    """A difference with its interval in points: ``+m±h`` while it lies in ``[-bound, bound]``,
    else ``+m [+a, +b]`` clipped to that range."""
    if math.isnan(iv.mean):
        return "-"
    m = f"{scale * iv.mean:+.{digits}f}"
    if math.isnan(iv.lo):
        return m
    if iv.lo >= -bound and iv.hi <= bound:
        return f"{m}±{scale * iv.half:.{digits}f}"
    a, b = max(iv.lo, -bound), min(iv.hi, bound)
    return f"{m} [{scale * a:+.{digits}f}, {scale * b:+.{digits}f}]"


def ranks_with_ties(
    scores: Sequence[Mapping[object, float]], higher_is_better: bool = True, level: float = 0.95
) -> list[int]:
    """Competition ranks from per-seed scores, one mapping seed -> score per entry.

    Entry ``i``'s rank is 1 + the number of entries ``j`` that beat it: whose paired
    interval of ``score_j - score_i`` over their common seeds lies entirely above 0
    (below 0 when lower is better). Entries no other entry beats share rank 1; two
    entries whose paired interval contains 0 are tied unless a third separates them.
    With one seed there is no interval and every entry beats those with a lower score."""
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for i, si in enumerate(scores):
        beaten = 0
        for j, sj in enumerate(scores):
            if i == j:
                continue
            iv = paired_interval({k: sign * v for k, v in sj.items()}, {k: sign * v for k, v in si.items()}, level)
            if math.isnan(iv.mean):
                continue
            if (iv.lo > 0) if not math.isnan(iv.lo) else iv.mean > 0:
                beaten += 1
        out.append(1 + beaten)
    return out


def rank_labels(ranks: Sequence[int]) -> list[str]:
    """``1``, ``2=``, ``2=``, ...: ``=`` marks a rank shared with another entry."""
    return [f"{r}=" if list(ranks).count(r) > 1 else str(r) for r in ranks]
