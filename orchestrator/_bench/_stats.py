"""Small, pure arithmetic over benchmark samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1), interpolated between closest ranks (numpy's default).

    NaN for no values (nothing was measured), as the peers' harness does.

    Raises:
        ValueError: ``q`` is outside [0, 1].
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {q}")
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``; None when either is missing, NaN or ``theirs`` is 0."""
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return None
    return ours / theirs


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of the values that are numbers; NaNs for none."""
    xs = [v for v in values if not math.isnan(v)]
    if not xs:
        return (math.nan, math.nan, math.nan)
    return (statistics.median(xs), min(xs), max(xs))


def progress_deciles(starts: Sequence[float], origin: float) -> list[float]:
    """Seconds after ``origin`` by which 10%, 20%, ... 100% of the handlers had started."""
    st = sorted(s - origin for s in starts)
    if not st:
        return []
    return [round(st[min(len(st) - 1, math.ceil(len(st) * d / 10) - 1)], 3) for d in range(1, 11)]
