"""m* as a statistic (issue 14, item 1): the success probability p(m) of a fit at a fixed step budget over
independent prompt seeds, and m*_q = the smallest m with p(m) >= q, with a bootstrap interval.

A single fit near m* is a coin flip (which side it falls can change with the machine's rounding), so one
search's m* is one draw. Here every length tried is fitted from ``n_seeds`` prompt initialisations at the same
budget; p(m) is the fraction that memorized exactly. The search is the one of :mod:`attnlab.memorize.search`
on p(m) instead of on "some restart memorized": doubling from ``m_start`` until p(m) >= q, then bisection
between the largest length below q and the smallest at or above it (it assumes p(m) rises with m, as the
restarts search assumes success does). m*_q is read off the lengths tried, so it is the bisection's answer.

Several step budgets come from the same fits: a fit stops at its first memorizing step, so it memorizes within a
budget b iff it memorized after at most b steps, and what it did up to b does not depend on the longest budget. The
search runs once per budget, longest first, over one table of fits (a length fitted for one budget is not fitted
again), so a gap between the budgets' m*_q shows when m* is budget-bound.

The interval resamples each tried length's outcomes (seeds with replacement, lengths independently: each fit
has its own prompt seed) and recomputes m*_q on the same lengths; its percentiles bound m*_q given the lengths
tried. An upper end of None means m*_q lies beyond the longest length tried in more than that share of resamples.
Pure functions over outcome lists: no model here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..core.errors import require
from .settings import MIN_PROMPT_SEEDS as MIN_SEEDS  # the fewest prompt seeds for p(m) to mean anything

T = TypeVar("T")

#: m -> for each prompt seed's fit at length m, the steps it took to memorize (None: not within the longest budget)
Outcomes = Callable[[int], Sequence[int | None]]


def m_star_q(table: Mapping[int, Sequence[bool]], q: float = 0.5) -> int | None:
    """The smallest length in ``table`` (m -> outcomes) whose success rate is at least ``q``; None if none."""
    hits = [m for m, outcomes in table.items() if np.mean(outcomes) >= q]
    return min(hits) if hits else None


def bootstrap_interval(table: Mapping[int, Sequence[bool]], q: float = 0.5, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[int | None, int | None]:
    """Percentile interval of m*_q under resampling each length's outcomes with replacement (module doc).
    A resample with no length at rate >= q counts as beyond every length tried: an end there is None."""
    require(isinstance(n_boot, int) and n_boot >= 1, f"n_boot must be a positive integer, got {n_boot!r}")
    require(0 < level < 1, f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    lengths = sorted(table)
    # (n_boot, n_lengths) resampled success rates
    rates = np.stack([rng.choice(np.asarray(table[m], dtype=float), size=(n_boot, len(table[m]))).mean(1)
                      for m in lengths], axis=1)
    beyond = np.inf
    found = np.where((rates >= q).any(1), np.asarray(lengths, dtype=float)[np.argmax(rates >= q, axis=1)], beyond)
    lo, hi = np.quantile(found, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return (None if lo == beyond else int(lo)), (None if hi == beyond else int(hi))


@dataclass
class PmResult:
    """The p(m) estimate of one setting: every tried length's outcomes, m*_q and its interval."""

    q: float
    n_seeds: int
    m_max: int
    budget: int                                 # the step budget p(m) is at
    m_star: int | None                          # m*_q: the smallest tried m with p(m) >= q (None: none)
    ci: tuple[int | None, int | None]          # bootstrap percentile interval of m*_q (None: beyond m_max)
    level: float
    p: dict[int, float] = field(default_factory=dict)          # m -> success rate
    outcomes: dict[int, list[bool]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def smallest_length(test: Callable[[int], T | None], m_max: int, m_start: int = 1) -> tuple[int | None, T | None]:
    """Doubling from ``m_start`` (capped at ``m_max``), then bisection between the last length that failed and
    the first that passed: ``(smallest passing length, what test returned there)``, or ``(None, None)`` when
    nothing up to ``m_max`` passes. ``test(m)`` returns None for a failure. Assumes passing is monotone in m,
    which is why the result is a search, not a proof (the module doc)."""
    require(isinstance(m_max, int) and m_max >= 1, f"m_max must be a positive integer, got {m_max!r}")
    require(isinstance(m_start, int) and 1 <= m_start <= m_max,
            f"m_start must be in 1..m_max={m_max}, got {m_start!r}")
    lo, hi, win, m = 0, None, None, m_start  # lo: largest failed length; hi: smallest passing length
    while True:
        got = test(m)
        if got is not None:
            hi, win = m, got
            break
        lo = m
        if m >= m_max:
            return None, None
        m = min(2 * m, m_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = test(mid)
        if got is not None:
            hi, win = mid, got
        else:
            lo = mid
    return hi, win


def estimate_m_star(outcomes: Outcomes, m_max: int, n_seeds: int, budgets: Sequence[int], q: float = 0.5,
                    m_start: int = 1, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> list[PmResult]:
    """Doubling from ``m_start`` then bisection on p(m), once per step budget (module doc), longest first;
    ``outcomes(m)`` fits ``n_seeds`` prompts at length m within the longest budget and returns each one's steps to
    memorize (None: it did not). One :class:`PmResult` per budget, in the order given; the bootstrap draws from
    ``seed``."""
    require(isinstance(n_seeds, int) and n_seeds >= MIN_SEEDS,
            f"p(m) needs at least {MIN_SEEDS} prompt seeds per length, got {n_seeds!r}")
    require(isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q <= 1, f"q must be in (0, 1], got {q!r}")
    require(len(budgets) >= 1 and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in budgets)
            and len(set(budgets)) == len(budgets), f"budgets must be distinct step counts >= 0, got {budgets!r}")
    table: dict[int, list[int | None]] = {}

    def fits(m: int) -> list[int | None]:
        if m not in table:
            got = list(outcomes(m))
            require(len(got) == n_seeds, f"outcomes({m}) gave {len(got)} fits, expected {n_seeds}")
            table[m] = got
        return table[m]

    def within(steps: Sequence[int | None], budget: int) -> list[bool]:
        return [s is not None and s <= budget for s in steps]

    for budget in sorted(budgets, reverse=True):
        smallest_length(lambda m, b=budget: float(np.mean(within(fits(m), b))) >= q or None, m_max, m_start)
    results = []
    for budget in budgets:
        ordered = {m: within(table[m], budget) for m in sorted(table)}
        results.append(PmResult(q=q, n_seeds=n_seeds, m_max=m_max, budget=budget, m_star=m_star_q(ordered, q),
                                ci=bootstrap_interval(ordered, q, n_boot, level, seed), level=level,
                                p={m: float(np.mean(v)) for m, v in ordered.items()}, outcomes=ordered))
    return results
