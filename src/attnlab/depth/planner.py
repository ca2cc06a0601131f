"""Depth and width for a parameter budget: Levine et al.'s fit beside the other published rules.

The budget is counted in one convention for every rule, so the rows compare: without a vocabulary it
is Kaplan's non-embedding ``12 L d^2`` (the convention of Levine et al.'s fit); with ``vocab`` it is
the total with a tied ``vocab x d`` embedding plus ``seq_len x d`` learned positions (GPT-2 style).
Each rule gives a depth; the width is then what the budget leaves at that (integer) depth, snapped to
a multiple of ``width_multiple``, and the row reports the shape's exact count in that convention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.errors import AttnlabError
from . import theory
from .params import KNOWN_MODELS, MOBILELLM, count, kaplan_non_embedding

#: Kaplan et al. (2020, Sec. 3.1, Fig. 5): (L, d) = (6, 4288) and (48, 1600) are within 3% loss, so the
#: aspect ratio d/L between these two is "flat"; the planner reports the band and its geometric middle.
KAPLAN_ASPECT = (1600 / 48, 4288 / 6)
NANOCHAT_ASPECT = 64  # nanochat: model_dim = 64 * depth
#: A depth more than this fraction away from the fit's L* gets a "too deep"/"too shallow" verdict.
VERDICT_TOLERANCE = 0.15
MIN_WIDTH = 8  # the narrowest shape the planner will recommend


@dataclass
class Recommendation:
    """One rule's shape for the budget. ``count`` is the shape's exact size in the plan's convention."""

    rule: str
    depth: int | None
    width: int | None
    count: int | None
    depth_range: tuple[float, float] | None
    source: str
    note: str


@dataclass
class Plan:
    budget: float
    convention: str
    vocab: int | None
    seq_len: int
    rows: list[Recommendation]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_width(vocab: int | None, seq_len: int) -> float:
    return float(vocab + seq_len) if vocab else 0.0


def size(depth: int, width: int, vocab: int | None = None, seq_len: int = 0) -> int:
    """The plan's count of an (L, d) shape: ``12 L d^2`` plus ``(vocab + seq_len) d`` when a vocab is given."""
    return round(kaplan_non_embedding(depth, width) + _per_width(vocab, seq_len) * width)


def width_for(budget: float, depth: int, vocab: int | None = None, seq_len: int = 0, multiple: int = 1) -> int:
    """The width that ``budget`` leaves at ``depth`` (root of 12 L d^2 + e d = N), snapped to ``multiple``,
    halved while the width is under four multiples (so small budgets are not rounded away)."""
    e = _per_width(vocab, seq_len)
    d = (-e + math.sqrt(e * e + 48.0 * depth * budget)) / (24.0 * depth)
    while multiple > 1 and d < 4 * multiple:
        multiple //= 2
    return max(multiple, multiple * round(d / multiple))


def _row(rule: str, t: float, shape: Callable[[float], tuple[float, float]], budget: float, vocab: int | None,
         seq_len: int, multiple: int, source: str, note: str) -> Recommendation:
    depth = max(1, round(shape(t)[0]))
    width = width_for(budget, depth, vocab, seq_len, multiple)
    return Recommendation(rule, depth, width, size(depth, width, vocab, seq_len), None, source, note)


def _mobilellm_shape() -> Callable[[float], tuple[float, float]]:
    """(L, d) of MobileLLM's released configs, interpolated in ln(12 L d^2) (its configs' own sizes)."""
    logs = np.log([count(a)["kaplan"] for a in MOBILELLM])
    depths = [a.depth for a in MOBILELLM]
    widths = [a.width for a in MOBILELLM]
    return lambda t: (float(np.interp(t, logs, depths)), float(np.interp(t, logs, widths)))


def plan(budget: float, vocab: int | None = None, seq_len: int = 0, width_multiple: int = 64) -> Plan:
    """Recommended (depth, width) for ``budget`` parameters under each published rule (see module doc)."""
    if not budget or budget <= 0 or not math.isfinite(budget):
        raise AttnlabError(f"--params must be a positive number, got {budget}")
    if vocab is not None and vocab < 1:
        raise AttnlabError(f"--vocab must be a positive integer, got {vocab}")
    if seq_len and not vocab:
        raise AttnlabError("--seq-len counts learned position embeddings: give --vocab too")
    e = _per_width(vocab, seq_len)
    convention = ("12 L d^2 non-embedding (Kaplan)" if not vocab else
                  f"12 L d^2 + ({vocab} vocab + {seq_len} positions) x d, tied head")
    if width_multiple < 1:
        raise AttnlabError(f"--width-multiple must be a positive integer, got {width_multiple}")
    smallest = size(1, MIN_WIDTH, vocab, seq_len)
    if budget < smallest:
        raise AttnlabError(f"budget {budget:.3g} is too small for any depth: one layer of width {MIN_WIDTH} "
                           f"already has {smallest} parameters (raise --params)")
    rows: list[Recommendation] = []
    warnings: list[str] = []

    fit = lambda L: (L, theory.optimal_width(L))  # noqa: E731
    t_fit = theory.solve_budget(budget, fit, 1e-6, 2000.0, e)
    lo, hi = (theory.optimal_params(L) for L in theory.FIT_DEPTHS)
    rows.append(_row("levine_fit", t_fit, fit, budget, vocab, seq_len, width_multiple,
                     "Levine et al. 2020 v3, Sec. 4: ln d* = 5.039 + 0.0555 L",
                     f"continuous L* = {t_fit:.1f}, d* = {theory.optimal_width(t_fit):.0f}; " +
                     ("inside" if lo <= budget <= hi else "extrapolated outside") +
                     f" the fitted range (depths 6-48, {lo:.2g}-{hi:.2g} params)"))

    thr = lambda L: (L, 3.0 ** L)  # noqa: E731
    t_thr = theory.solve_budget(budget, thr, 1e-6, 60.0, e)
    rows.append(_row("levine_threshold", math.ceil(t_thr), thr, budget, vocab, seq_len, width_multiple,
                     "Levine et al. 2020, Theorems 1-2: L_th = log_3 d_x",
                     f"theory: below L = {t_thr:.2f} depth is depth-efficient, so use at least this many layers; "
                     "constants are loose (the fit's optimum is far deeper)"))

    lo_k, hi_k = (theory.solve_budget(budget, lambda L, r=r: (L, r * L), 1e-6, 1e5, e) for r in KAPLAN_ASPECT[::-1])
    mid = math.sqrt(KAPLAN_ASPECT[0] * KAPLAN_ASPECT[1])
    kap = _row("kaplan_band", 0.0, lambda _: (theory.solve_budget(budget, lambda L: (L, mid * L), 1e-6, 1e5, e), 0),
               budget, vocab, seq_len, width_multiple, "Kaplan et al. 2020, Sec. 3.1 / Fig. 5",
               f"loss flat (within ~3%) for d/L in [{KAPLAN_ASPECT[0]:.0f}, {KAPLAN_ASPECT[1]:.0f}], i.e. "
               f"L in [{lo_k:.1f}, {hi_k:.1f}]; shape shown at d/L = {mid:.0f}")
    kap.depth_range = (round(lo_k, 2), round(hi_k, 2))
    rows.append(kap)

    nano = lambda L: (L, NANOCHAT_ASPECT * L)  # noqa: E731
    rows.append(_row("nanochat", theory.solve_budget(budget, nano, 1e-6, 1e5, e), nano, budget, vocab, seq_len,
                     width_multiple, "nanochat (Karpathy): d = 64 L", "an engineering default, not a fit"))

    mobile = _mobilellm_shape()
    logs = [math.log(count(a)["kaplan"]) for a in MOBILELLM]
    ends = [size(round(mobile(t)[0]), round(mobile(t)[1]), vocab, seq_len) for t in (logs[0], logs[-1])]
    if ends[0] <= budget <= ends[-1]:
        t_mob = theory.solve_budget(budget, mobile, logs[0], logs[-1], e)
        rows.append(_row("mobilellm", t_mob, mobile, budget, vocab, seq_len, width_multiple,
                         "Liu et al. 2024 (MobileLLM): deep and thin below 1B",
                         "depth interpolated between the released 125M-1.5B configs (their counts include "
                         "a tied 32K embedding and SwiGLU; interpolated on their 12 L d^2)"))
    else:
        rows.append(Recommendation("mobilellm", None, None, None, None, "Liu et al. 2024 (MobileLLM)",
                                   "no recommendation: budget outside its released configs "
                                   f"({ends[0]:.3g}-{ends[-1]:.3g})"))
    rows.append(Recommendation("petty", None, None, None, None, "Petty et al. 2024 (NAACL)",
                               "qualitative: deeper helps with rapidly diminishing returns at 41M-374M"))
    rows.append(Recommendation("tay", None, None, None, None, "Tay et al. 2022 (Scale Efficiently)",
                               "qualitative: upstream loss shape-insensitive; downstream prefers deep-narrow"))

    d_star = theory.optimal_width(t_fit)
    if vocab and vocab < d_star:
        warnings.append(f"vocabulary {vocab} < fitted width {d_star:.0f}: Wies et al. 2021 (vocabulary "
                        "bottleneck) predict that width beyond the embedding rank is wasted, favouring more depth")
    return Plan(budget, convention, vocab, seq_len, rows, warnings)


def assess(depth: int, width: int) -> dict[str, Any]:
    """Place an (L, d) shape against the fit at its own budget 12 L d^2: L*, d*, ratio and verdict
    ("too deep" like GPT-3 175B in Levine et al. Sec. 4, "too shallow", or "near the fit")."""
    n = kaplan_non_embedding(depth, width)
    L_star = theory.fit_depth_for_budget(n)
    ratio = depth / L_star
    verdict = ("too deep" if ratio > 1 + VERDICT_TOLERANCE else
               "too shallow" if ratio < 1 - VERDICT_TOLERANCE else "near the fit")
    return {"depth": depth, "width": width, "kaplan": round(n), "fit_depth": L_star,
            "fit_width": theory.optimal_width(L_star), "depth_ratio": ratio, "verdict": verdict,
            "threshold_depth": theory.threshold_depth(width)}


def known_models() -> list[dict[str, Any]]:
    """Each model of :data:`KNOWN_MODELS` and :data:`MOBILELLM` with its exact counts and its verdict."""
    return [{"name": a.name, "source": a.source, **count(a), **assess(a.depth, a.width)}
            for a in KNOWN_MODELS + MOBILELLM]


#: The planner's table (``attnlab depth plan``): one row per rule that gives a shape, per budget.
PLAN_COLUMNS = ["budget", "rule", "L", "d", "count"]
#: Published shapes against the fit (``attnlab depth plan --known``).
KNOWN_COLUMNS = ["model", "L", "d", "12Ld^2", "total (own convention)", "fit L*", "fit d*", "verdict"]


def budget_text(budget: float) -> str:
    """A budget as one would type it: 1e7, 1.3e9, 125000."""
    return f"{budget:.6g}".replace("e+0", "e").replace("e+", "e")


def plan_rows(plans: list[Plan]) -> list[list[Any]]:
    return [[budget_text(p.budget), r.rule, r.depth, r.width, r.count] for p in plans for r in p.rows
            if r.depth is not None]


def known_rows(models: list[dict[str, Any]]) -> list[list[Any]]:
    return [[m["name"], m["depth"], m["width"], m["kaplan"], m["total"], round(m["fit_depth"], 1),
             round(m["fit_width"]), m["verdict"]] for m in models]
