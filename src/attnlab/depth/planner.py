"""Depth and width for a parameter budget: Levine et al.'s fit beside the other published rules.

The budget is counted in one convention for every rule, so the rows compare (:class:`Counting`): by
default the *exact* count of the project's GPT (:class:`attnlab.depth.model.GPT`, a GPT-2 block), or of a
Llama-style block (``family="llama"``), non-embedding without a vocabulary and the total with ``vocab``
(plus ``seq_len`` learned positions for the GPT); ``family="kaplan"`` is Kaplan's ``12 L d^2`` (+
``(V + T) d``). Each rule gives a depth; the width is then what the budget leaves at that (integer) depth,
snapped to a multiple of ``width_multiple``, and the row reports the shape's exact count and its
``12 L d^2``. Levine et al.'s fit is stated in ``12 L d^2``, so it is also solved in that convention as its
own row (``levine_fit_12Ld2``), which shows what the convention alone moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.errors import AttnlabError
from . import theory
from .params import FAMILIES, KNOWN_MODELS, MOBILELLM, Architecture, count, kaplan_non_embedding

#: Kaplan et al. (2020, Sec. 3.1, Fig. 5): (L, d) = (6, 4288) and (48, 1600) are within 3% loss, so the
#: aspect ratio d/L between these two is "flat"; the planner reports the band and its geometric middle.
KAPLAN_ASPECT = (1600 / 48, 4288 / 6)
NANOCHAT_ASPECT = 64  # nanochat: model_dim = 64 * depth
#: A depth more than this fraction away from the fit's L* gets a "too deep"/"too shallow" verdict.
VERDICT_TOLERANCE = 0.15
MIN_WIDTH = 8  # the narrowest shape the planner will recommend
LLAMA_FFN_MULTIPLE = 256  # Meta's reference Llama: hidden = int(8 d / 3) rounded up to multiple_of = 256


def _gpt_template(depth: float, width: float, vocab: int, seq_len: int, exact: bool) -> Architecture:
    return Architecture("gpt", "gpt2", depth, width, vocab, seq_len)  # d_ff = 4d, tied head


def _llama_template(depth: float, width: float, vocab: int, seq_len: int, exact: bool) -> Architecture:
    ffn = 8 * width / 3
    if exact:
        ffn = LLAMA_FFN_MULTIPLE * math.ceil(int(ffn) / LLAMA_FFN_MULTIPLE)
    return Architecture("llama", "llama", depth, width, vocab, 0, 1, 1, ffn, False, head_dim=width)


#: Template architectures a plan can count in: name -> (builder of the (L, d) shape, description).
TEMPLATES: dict[str, tuple[Callable[..., Architecture], str]] = {
    "gpt": (_gpt_template, "the project's GPT (GPT-2 block: d_ff = 4d, biases, LayerNorms, tied head)"),
    "llama": (_llama_template, "a Llama block (SwiGLU d_ff = 8d/3 rounded up to 256, RMSNorm, no biases, "
                               "untied head)"),
}
#: The names ``--family`` accepts: the templates and Kaplan's 12 L d^2.
COUNTINGS = ("gpt", "llama", "kaplan")


@dataclass(frozen=True)
class Counting:
    """How a plan counts an (L, d) shape: ``family`` ``"kaplan"`` (``12 L d^2``, plus ``(V + T) d`` with a
    vocabulary) or a template of :data:`TEMPLATES` counted exactly (non-embedding, or total with ``vocab``)."""

    family: str = "gpt"
    vocab: int | None = None
    seq_len: int = 0

    def size(self, depth: float, width: float) -> float:
        """The count at real (L, d) (the counters are polynomials), for solving a rule's curve."""
        if self.family == "kaplan":
            return kaplan_non_embedding(depth, width) + (self.vocab + self.seq_len if self.vocab else 0) * width
        arch = TEMPLATES[self.family][0](depth, width, self.vocab or 1, self.seq_len, False)
        p = FAMILIES[arch.family](arch)  # no integer checks: real L and d while solving
        return float(sum(p.values()) if self.vocab else sum(v for k, v in p.items()
                                                           if k in ("attention", "feed_forward", "norms")))

    def exact(self, depth: int, width: int) -> int:
        """The exact count of the integer shape."""
        if self.family == "kaplan":
            return round(self.size(depth, width))
        c = count(TEMPLATES[self.family][0](depth, width, self.vocab or 1, self.seq_len, True))
        return c["total"] if self.vocab else c["non_embedding"]

    def describe(self) -> str:
        if self.family == "kaplan":
            return ("12 L d^2 non-embedding (Kaplan)" if not self.vocab else
                    f"12 L d^2 + ({self.vocab} vocab + {self.seq_len} positions) x d, tied head")
        what = TEMPLATES[self.family][1]
        if not self.vocab:
            return f"exact non-embedding count of {what}"
        positions = f" + {self.seq_len} learned positions" if self.seq_len and self.family == "gpt" else ""
        return f"exact total count of {what}, vocabulary {self.vocab}{positions}"


@dataclass
class Recommendation:
    """One rule's shape for the budget. ``count`` is the shape's exact size in the plan's convention,
    ``kaplan`` its ``12 L d^2``."""

    rule: str
    depth: int | None
    width: int | None
    count: int | None
    depth_range: tuple[float, float] | None
    source: str
    note: str
    kaplan: int | None = None


@dataclass
class Plan:
    budget: float
    convention: str
    vocab: int | None
    seq_len: int
    rows: list[Recommendation]
    warnings: list[str] = field(default_factory=list)
    family: str = "gpt"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size(depth: int, width: int, vocab: int | None = None, seq_len: int = 0, family: str = "kaplan") -> int:
    """The plan's count of an (L, d) shape (:class:`Counting`); by default ``12 L d^2`` plus
    ``(vocab + seq_len) d`` when a vocab is given."""
    return Counting(family, vocab, seq_len).exact(depth, width)


def width_for(budget: float, depth: int, counting: Counting | None = None, multiple: int = 1) -> int:
    """The width that ``budget`` leaves at ``depth`` in ``counting`` (default ``12 L d^2``): the real root,
    then the multiple of ``multiple`` (halved while the width is under four multiples, so small budgets
    are not rounded away) whose exact count is nearest the budget."""
    counting = counting or Counting("kaplan")
    d = theory.solve_budget(budget, lambda w: (depth, w), 1e-9, 1e8, count=counting.size)
    while multiple > 1 and d < 4 * multiple:
        multiple //= 2
    near = round(d / multiple)
    return min((multiple * k for k in {max(1, near - 1), max(1, near), near + 1}),
               key=lambda w: (abs(counting.exact(depth, w) - budget), w))


def _row(rule: str, t: float, shape: Callable[[float], tuple[float, float]], budget: float, counting: Counting,
         multiple: int, source: str, note: str) -> Recommendation:
    depth = max(1, round(shape(t)[0]))
    width = width_for(budget, depth, counting, multiple)
    return Recommendation(rule, depth, width, counting.exact(depth, width), None, source, note,
                          round(kaplan_non_embedding(depth, width)))


def _mobilellm_shape(counting: Counting) -> tuple[Callable[[float], tuple[float, float]], list[float]]:
    """(L, d) of MobileLLM's released configs, interpolated in the log of their size in ``counting``;
    and those log sizes (the curve's ends)."""
    logs = [math.log(counting.size(a.depth, a.width)) for a in MOBILELLM]
    depths = [a.depth for a in MOBILELLM]
    widths = [a.width for a in MOBILELLM]
    return (lambda t: (float(np.interp(t, logs, depths)), float(np.interp(t, logs, widths)))), logs


def _solve(budget: float, shape: Callable[[float], tuple[float, float]], counting: Counting, lo: float = 1e-6,
           hi: float = 1e5) -> float:
    return theory.solve_budget(budget, shape, lo, hi, count=counting.size)


def plan(budget: float, vocab: int | None = None, seq_len: int = 0, width_multiple: int = 64,
         family: str = "gpt") -> Plan:
    """Recommended (depth, width) for ``budget`` parameters under each published rule, counted exactly in
    ``family`` (see module doc)."""
    if not budget or budget <= 0 or not math.isfinite(budget):
        raise AttnlabError(f"--params must be a positive number, got {budget}")
    if vocab is not None and vocab < 1:
        raise AttnlabError(f"--vocab must be a positive integer, got {vocab}")
    if seq_len and not vocab:
        raise AttnlabError("--seq-len counts learned position embeddings: give --vocab too")
    if family not in COUNTINGS:
        raise AttnlabError(f"unknown --family {family!r} (use {', '.join(COUNTINGS)})")
    if seq_len and family == "llama":
        raise AttnlabError("--seq-len counts learned positions, which a Llama block has none of (drop it)")
    if width_multiple < 1:
        raise AttnlabError(f"--width-multiple must be a positive integer, got {width_multiple}")
    counting, paper = Counting(family, vocab, seq_len), Counting("kaplan", vocab, seq_len)
    smallest = max(c.exact(1, MIN_WIDTH) for c in (counting, paper))
    if budget < smallest:
        raise AttnlabError(f"budget {budget:.3g} is too small for any depth: one layer of width {MIN_WIDTH} "
                           f"already has {smallest} parameters (raise --params)")
    rows: list[Recommendation] = []
    warnings: list[str] = []

    fit = lambda L: (L, theory.optimal_width(L))  # noqa: E731
    lo, hi = (theory.optimal_params(L) for L in theory.FIT_DEPTHS)
    where = (("inside" if lo <= budget <= hi else "extrapolated outside") +
             f" the fitted range (depths 6-48, {lo:.2g}-{hi:.2g} params)")
    t_fit = _solve(budget, fit, counting, hi=2000.0)
    rows.append(_row("levine_fit", t_fit, fit, budget, counting, width_multiple,
                     "Levine et al. 2020 v3, Sec. 4: ln d* = 5.039 + 0.0555 L",
                     f"continuous L* = {t_fit:.1f}, d* = {theory.optimal_width(t_fit):.0f}; {where}"))
    if family != "kaplan":  # the fit as the paper counts: 12 L d^2 (+ embeddings) = N; its exact count beside
        t_paper = _solve(budget, fit, paper, hi=2000.0)
        r = _row("levine_fit_12Ld2", t_paper, fit, budget, paper, width_multiple,
                 "Levine et al. 2020 v3, Sec. 4, in its own convention N = 12 L d^2",
                 f"continuous L* = {t_paper:.1f}, d* = {theory.optimal_width(t_paper):.0f} with "
                 f"{paper.describe()} = N; count column: the shape's exact count ({counting.describe()})")
        r.count = counting.exact(r.depth, r.width)
        rows.append(r)

    thr = lambda L: (L, 3.0 ** L)  # noqa: E731
    t_thr = _solve(budget, thr, counting, hi=60.0)
    rows.append(_row("levine_threshold", math.ceil(t_thr), thr, budget, counting, width_multiple,
                     "Levine et al. 2020, Theorems 1-2: L_th = log_3 d_x",
                     f"theory: below L = {t_thr:.2f} depth is depth-efficient, so use at least this many layers; "
                     "constants are loose (the fit's optimum is far deeper)"))

    lo_k, hi_k = (_solve(budget, lambda L, r=r: (L, r * L), counting) for r in KAPLAN_ASPECT[::-1])
    mid = math.sqrt(KAPLAN_ASPECT[0] * KAPLAN_ASPECT[1])
    band = lambda L: (L, mid * L)  # noqa: E731
    kap = _row("kaplan_band", _solve(budget, band, counting), band, budget, counting, width_multiple,
               "Kaplan et al. 2020, Sec. 3.1 / Fig. 5",
               f"loss flat (within ~3%) for d/L in [{KAPLAN_ASPECT[0]:.0f}, {KAPLAN_ASPECT[1]:.0f}], i.e. "
               f"L in [{lo_k:.1f}, {hi_k:.1f}]; shape shown at d/L = {mid:.0f}")
    kap.depth_range = (round(lo_k, 2), round(hi_k, 2))
    rows.append(kap)

    nano = lambda L: (L, NANOCHAT_ASPECT * L)  # noqa: E731
    rows.append(_row("nanochat", _solve(budget, nano, counting), nano, budget, counting, width_multiple,
                     "nanochat (Karpathy): d = 64 L", "an engineering default, not a fit"))

    mobile, logs = _mobilellm_shape(counting)
    ends = [math.exp(t) for t in (logs[0], logs[-1])]
    if ends[0] < budget < ends[-1]:
        rows.append(_row("mobilellm", _solve(budget, mobile, counting, logs[0], logs[-1]), mobile, budget, counting,
                         width_multiple, "Liu et al. 2024 (MobileLLM): deep and thin below 1B",
                         "depth interpolated between the released 125M-1.5B configs (their counts include "
                         "a tied 32K embedding and SwiGLU; interpolated on their shapes' size in this count)"))
    else:
        rows.append(Recommendation("mobilellm", None, None, None, None, "Liu et al. 2024 (MobileLLM)",
                                   "no recommendation: budget outside its released configs "
                                   f"({ends[0]:.3g}-{ends[-1]:.3g} in this count)"))
    rows.append(Recommendation("petty", None, None, None, None, "Petty et al. 2024 (NAACL)",
                               "qualitative: deeper helps with rapidly diminishing returns at 41M-374M"))
    rows.append(Recommendation("tay", None, None, None, None, "Tay et al. 2022 (Scale Efficiently)",
                               "qualitative: upstream loss shape-insensitive; downstream prefers deep-narrow"))

    d_star = theory.optimal_width(t_fit)
    if vocab and vocab < d_star:
        warnings.append(f"vocabulary {vocab} < fitted width {d_star:.0f}: Wies et al. 2021 (vocabulary "
                        "bottleneck) predict that width beyond the embedding rank is wasted, favouring more depth")
    return Plan(budget, counting.describe(), vocab, seq_len, rows, warnings, family)


def assess(depth: int, width: int, budget: float | None = None) -> dict[str, Any]:
    """Place an (L, d) shape among the laws. At ``budget`` (default its own ``12 L d^2``, the paper's
    convention; the planner passes exact non-embedding counts): the fit's L*, d*, the depth ratio and a
    verdict ("too deep" like GPT-3 175B in Levine et al. Sec. 4, "too shallow", or "near the fit"). At its
    own depth and width: the theory's threshold ``log_3 d`` and regime (Theorems 1-2); the fit's
    ``N*(L) = 12 L d*(L)^2``, the size at which depth L becomes optimal, and whether the shape is *past the
    fit's too-deep boundary* (``N < N*(L)``: per the fit a shallower network of the same size is better, the
    paper's reading of GPT-3 175B; the verdict adds a tolerance); and Kaplan's band (d/L in [33, 715],
    Sec. 3.1)."""
    n = kaplan_non_embedding(depth, width) if budget is None else budget
    L_star = theory.fit_depth_for_budget(n)
    ratio = depth / L_star
    verdict = ("too deep" if ratio > 1 + VERDICT_TOLERANCE else
               "too shallow" if ratio < 1 - VERDICT_TOLERANCE else "near the fit")
    aspect = width / depth
    return {"depth": depth, "width": width, "kaplan": round(kaplan_non_embedding(depth, width)), "budget": n,
            "fit_depth": L_star, "fit_width": theory.optimal_width(L_star), "depth_ratio": ratio, "verdict": verdict,
            "threshold_depth": theory.threshold_depth(width), "regime": theory.regime(depth, width),
            "fit_width_at_depth": theory.optimal_width(depth), "fit_params_at_depth": theory.optimal_params(depth),
            "past_too_deep": n < theory.optimal_params(depth), "aspect": aspect,
            "in_kaplan_band": KAPLAN_ASPECT[0] <= aspect <= KAPLAN_ASPECT[1]}


def known_models() -> list[dict[str, Any]]:
    """Each model of :data:`KNOWN_MODELS` and :data:`MOBILELLM` with its exact counts, placed among the laws
    (:func:`assess`) at its exact non-embedding count, and the fit's L* and verdict at its ``12 L d^2`` (the
    paper's convention) beside them."""
    out = []
    for a in KNOWN_MODELS + MOBILELLM:
        c = count(a)
        paper = assess(a.depth, a.width)
        out.append({"name": a.name, "family": a.family, "source": a.source, **c,
                    **assess(a.depth, a.width, c["non_embedding"]),
                    "fit_depth_12Ld2": paper["fit_depth"], "verdict_12Ld2": paper["verdict"]})
    return out


#: The planner's table (``attnlab depth plan``): one row per rule that gives a shape, per budget.
PLAN_COLUMNS = ["budget", "rule", "L", "d", "count", "12Ld^2"]
#: Published shapes among the laws (``attnlab depth plan --known``).
KNOWN_COLUMNS = ["model", "L", "d", "non-embedding", "total", "12Ld^2", "log3 d", "fit L* (exact N)", "verdict",
                 "fit L* (12Ld^2)", "verdict (12Ld^2)", "N*(L)", "N < N*(L)", "d/L in [33, 715]"]


def budget_text(budget: float) -> str:
    """A budget as one would type it: 1e7, 1.3e9, 125000."""
    return f"{budget:.6g}".replace("e+0", "e").replace("e+", "e")


def plan_rows(plans: list[Plan]) -> list[list[Any]]:
    return [[budget_text(p.budget), r.rule, r.depth, r.width, r.count, r.kaplan] for p in plans for r in p.rows
            if r.depth is not None]


def known_rows(models: list[dict[str, Any]]) -> list[list[Any]]:
    yes = {True: "yes", False: "no"}
    return [[m["name"], m["depth"], m["width"], m["non_embedding"], m["total"], m["kaplan"],
             round(m["threshold_depth"], 2), round(m["fit_depth"], 1), m["verdict"], round(m["fit_depth_12Ld2"], 1),
             m["verdict_12Ld2"], f"{m['fit_params_at_depth']:.3g}", "too deep" if m["past_too_deep"] else "no",
             yes[m["in_kaplan_band"]]]
            for m in models]


KNOWN_TITLE = ("Published shapes among the laws: exact counts; the fit ln d* = 5.039 + 0.0555 L at the exact "
               "non-embedding N and at 12 L d^2; N*(L) = 12 L d*(L)^2; Kaplan's flat band")
#: One shape among the laws (``attnlab depth count``).
LAWS_COLUMNS = ["law (source)", "value", "this shape"]


def laws_rows(place: dict[str, Any], paper: dict[str, Any]) -> list[list[Any]]:
    """The rows of ``count``'s laws table from :func:`assess` at the exact count (``place``) and at
    ``12 L d^2`` (``paper``)."""
    L = place["depth"]
    near = min(MOBILELLM, key=lambda a: abs(math.log(count(a)["non_embedding"] / place["budget"])))
    return [
        ["L_th = log3 d (Levine et al., Theorems 1-2)", round(place["threshold_depth"], 2),
         f"L = {L}: {place['regime']}"],
        ["fit L* x d* at the exact N (Levine et al. v3 Sec. 4)",
         f"{place['fit_depth']:.1f} x {place['fit_width']:.0f}",
         f"{place['verdict']} (L / L* = {place['depth_ratio']:.2f})"],
        ["fit L* x d* at 12 L d^2 (the paper's convention)",
         f"{paper['fit_depth']:.1f} x {paper['fit_width']:.0f}",
         f"{paper['verdict']} (L / L* = {paper['depth_ratio']:.2f})"],
        ["N*(L) = 12 L d*(L)^2: where depth L becomes optimal", f"{place['fit_params_at_depth']:.3g}",
         "past the fit's too-deep boundary (N < N*(L))" if place["past_too_deep"] else "N >= N*(L): not too deep"],
        ["Kaplan et al. 2020 Sec. 3.1: loss flat for d/L in [33, 715]", f"d/L = {place['aspect']:.1f}",
         "inside the flat band" if place["in_kaplan_band"] else "outside the flat band"],
        ["MobileLLM (Liu et al. 2024): nearest released config", f"{near.name}: {near.depth} x {near.width}",
         f"{count(near)['non_embedding']:,} non-embedding vs this shape's {place['budget']:,.0f}"],
    ]
