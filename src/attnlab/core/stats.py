"""Small statistics shared by the experiments' summaries."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def mean_t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """The mean of independent ``values`` (paired differences, or one number per seed) with its two-sided Student t
    interval (n - 1 degrees of freedom): mean ± t_{(1+level)/2, n-1} · sd / sqrt(n). Fewer than two values have no
    interval (``sd``, ``low``, ``high`` None)."""
    from scipy.stats import t as student_t

    values = list(values)
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "low": None, "high": None, "level": level}
    sd = statistics.stdev(values)
    half = float(student_t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "level": level}
