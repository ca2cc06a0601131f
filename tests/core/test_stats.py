import math

import pytest

from attnlab.core.stats import mean_t_interval


def test_mean_t_interval_is_the_student_t_interval():
    t = mean_t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert t["n"] == 3 and t["mean"] == 2.0 and t["sd"] == 1.0
    assert t["low"] == pytest.approx(2.0 - half) and t["high"] == pytest.approx(2.0 + half)
    one = mean_t_interval([5.0])
    assert (one["mean"], one["sd"], one["low"], one["high"]) == (5.0, None, None, None)
