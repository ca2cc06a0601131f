"""Levine et al. (2020) as functions: the depth threshold, separation rank in its two regimes, and the
paper's fitted depth-to-width law.

Assumptions (the paper's Sec. 2 model): the self-attention stack without softmax, layer norm and
feed-forward, so each layer is a cubic polynomial of its input (query x key x value) and depth L gives
degree 3^L. The separation rank ``sep_(A,B)`` of the output w.r.t. a split (A, B) of the positions is
the paper's measure of how much the network correlates A with B.

* Theorems 1-2 (regimes): below ``L_th = log_3 d_x`` log-separation rank grows like 3^L (double
  exponential in depth, polynomial in width: depth-efficient); above it like L * d_x (depth and width
  interchangeable: depth-inefficient).
* The paper's bound constants are not reproduced here (its full text was not available to us). In
  their place, :func:`separation_rank` is the closed form ``C((3^L-1)/2 + d_x, d_x)`` that
  :mod:`attnlab.depth.separation` measures exactly for N = 2 positions; it has both regimes.
* Sec. 4 (v3, "The Depth-to-Width Interplay"): the fit ``ln d_x*(L) = 5.039 + 0.0555 L`` over depths
  6-48: a depth-L network beats shallower ones of the same size once its width exceeds d_x*(L).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..core.errors import AttnlabError

#: Levine et al. 2020 (v3, Sec. 4) fit ln d* = A + B * L, measured on depths 6..48.
FIT_A = 5.039
FIT_B = 0.0555
FIT_DEPTHS = (6, 48)


def threshold_depth(width: float) -> float:
    """``L_th = log_3(d_x)`` (Theorems 1-2): the depth at which depth stops being exponentially efficient."""
    if width < 1:
        raise AttnlabError(f"width must be at least 1, got {width}")
    return math.log(width, 3)


def regime(depth: int, width: int) -> str:
    """``"depth-efficient"`` when L < log_3 d_x, else ``"depth-inefficient"`` (Theorems 1-2)."""
    return "depth-efficient" if depth < threshold_depth(width) else "depth-inefficient"


def polynomial_degree_half(depth: int) -> int:
    """``n = (3^L - 1) / 2``: the exponent in the closed form (half the degree 3^L, rounded down)."""
    if depth < 1:
        raise AttnlabError(f"depth must be at least 1, got {depth}")
    return (3 ** depth - 1) // 2


def separation_rank(depth: int, width: int) -> int:
    """Exact ``C((3^L-1)/2 + d_x, d_x)``: the separation rank of the simplified network's output at
    position 1 w.r.t. the split ({1}, {2}) of N = 2 positions, for generic weights with head dim > 1
    (measured exactly in :mod:`attnlab.depth.separation`; not a theorem of the paper)."""
    if width < 1:
        raise AttnlabError(f"width must be at least 1, got {width}")
    return math.comb(polynomial_degree_half(depth) + width, width)


def log_separation_rank(depth: float, width: float) -> float:
    """Natural log of :func:`separation_rank`, through lgamma (real depth and width allowed, for plots)."""
    n = (3.0 ** depth - 1) / 2
    return math.lgamma(n + width + 1) - math.lgamma(n + 1) - math.lgamma(width + 1)


def log_separation_rank_asymptotic(depth: int, width: int) -> float:
    """The leading form of ``ln sep`` in the regime ``(depth, width)`` is in (Theorems 1-2):

    * depth-efficient (n = (3^L-1)/2 << d_x): ``n ln d_x - ln n!``, i.e. ~ 3^L ln d_x / 2: double
      exponential in L, polynomial in d_x;
    * depth-inefficient (n >> d_x): ``d_x ln n - ln d_x!`` with ln n ~ L ln 3 - ln 2: Theta(L d_x).
    """
    n = (3.0 ** depth - 1) / 2
    if regime(depth, width) == "depth-efficient":
        return n * math.log(width) - math.lgamma(n + 1)
    return width * math.log(n) - math.lgamma(width + 1)


def width_to_match(depth_ref: int, width_ref: int, depth: int) -> int:
    """The smallest width whose depth-``depth`` network has at least the separation rank of the
    (``depth_ref``, ``width_ref``) one (exact integers): the price of removing layers."""
    target = separation_rank(depth_ref, width_ref)
    lo, hi = 1, 1
    while separation_rank(depth, hi) < target:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if separation_rank(depth, mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def efficient_budget_limit(depth: int) -> float:
    """Largest ``12 L d^2`` budget at which depth L still has ``d_x <= 3^L`` (Levine et al. v1, Table 1
    reading of the threshold: N <= 12 L 9^L)."""
    return 12.0 * depth * 9.0 ** depth


def optimal_width(depth: float) -> float:
    """``d_x*(L) = exp(5.039 + 0.0555 L)`` (Sec. 4 fit): the width at which depth L becomes optimal."""
    return math.exp(FIT_A + FIT_B * depth)


def optimal_depth(width: float) -> float:
    """Inverse of :func:`optimal_width`: ``L*(d) = (ln d - 5.039) / 0.0555``."""
    if width <= 0:
        raise AttnlabError(f"width must be positive, got {width}")
    return (math.log(width) - FIT_A) / FIT_B


def optimal_params(depth: float) -> float:
    """``N*(L) = 12 L d_x*(L)^2`` non-embedding parameters at which depth L is optimal."""
    return 12.0 * depth * optimal_width(depth) ** 2


def solve_budget(budget: float, shape: Callable[[float], tuple[float, float]], lo: float, hi: float,
                 per_width: float = 0.0, count: Callable[[float, float], float] | None = None) -> float:
    """The parameter t in [lo, hi] at which ``count(L, d) = budget`` for ``(L, d) = shape(t)`` (bisection;
    the count must grow with t). The default count is ``12 L d^2 + per_width * d``, ``per_width`` carrying
    embeddings (vocab + positions); the planner passes an architecture's exact count instead."""
    def size(t: float) -> float:
        L, d = shape(t)
        return count(L, d) if count is not None else 12.0 * L * d * d + per_width * d

    if budget <= size(lo):
        raise AttnlabError(f"budget {budget:.3g} is below the smallest shape this rule allows ({size(lo):.3g})")
    if budget >= size(hi):
        raise AttnlabError(f"budget {budget:.3g} is above the largest shape this rule allows ({size(hi):.3g})")
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if size(mid) < budget else (lo, mid)
    return (lo + hi) / 2


def fit_depth_for_budget(budget: float, per_width: float = 0.0) -> float:
    """Continuous depth L* whose fitted optimal shape ``(L, d_x*(L))`` has ``budget`` parameters
    (``12 L d^2`` plus ``per_width * d`` embedding parameters). At 1e12 this gives L* ~ 95, d* ~ 29.7K."""
    return solve_budget(budget, lambda L: (L, optimal_width(L)), 1e-6, 2000.0, per_width)
