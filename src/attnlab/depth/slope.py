"""Does the best depth grow with the budget? L*(budget) with bootstrap intervals, its slope in ln N, and the
paper's prediction and the zero-slope alternative beside it.

* **L* of a curve** (:func:`best_depth`): the held-out loss against ``ln L`` is fitted by a parabola (least
  squares over the sweep's depths) and L* is the parabola's minimum within the swept depths (an end point when it
  opens downward or its vertex lies outside). With fewer than three depths it is the best swept depth.
* **Per budget**: L* of each seed's curve, and of the mean curve over seeds; the interval resamples the seeds with
  replacement (a draw: as many seeds as there are, their mean curve, its L*) and takes the 2.5 and 97.5 percentiles.
  Only seeds with every depth of the budget count (a sweep still running adds nothing half-finished).
* **The slope**: ``L* = c + s ln N`` by least squares over the budgets, its interval from the same draws (each draw
  resamples the seeds of every budget independently). Beside it the paper's prediction: Levine et al.'s fit
  (Sec. 4, ``ln d* = 5.039 + 0.0555 L`` with ``12 L d*^2 = N``) gives L* = 1.48, 4.33, 9.62 at 0.5M, 2M, 8M
  (:func:`attnlab.depth.theory.fit_depth_for_budget`), a slope of 2.94 per unit of ln N; and the zero-slope
  alternative (the same best depth at every budget). Zero slope is *rejected* when the interval excludes 0.

With 2 seeds a budget's bootstrap has three distinct draws (seed 0 twice, seed 1 twice, both): the interval is
then the range of the two seeds' L* and the mean's, not a calibrated 95% interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .theory import fit_depth_for_budget

#: The dense grid (in ln L) on which the fitted parabola is minimised.
GRID_POINTS = 2001
#: The percentiles of the bootstrap interval.
INTERVAL = (2.5, 97.5)


def best_depth(depths: Sequence[float], losses: Sequence[float]) -> float:
    """The continuous L* of one loss curve: minimum of the least-squares parabola in ``ln L`` within the swept
    depths (three or more depths), else the best swept depth."""
    x, y = np.log(np.asarray(depths, dtype=float)), np.asarray(losses, dtype=float)
    if len(x) < 3:
        return float(np.exp(x[int(np.argmin(y))]))
    coef = np.polyfit(x, y, 2)
    grid = np.linspace(x.min(), x.max(), GRID_POINTS)
    depth = np.exp(grid)
    depth[[0, -1]] = min(depths), max(depths)  # the end points exactly (exp(ln 16) is not 16)
    return float(depth[int(np.argmin(np.polyval(coef, grid)))])


def _curves(rows: Sequence[Mapping[str, Any]], design: Sequence[int] | None = None
            ) -> tuple[list[int], dict[int, np.ndarray]]:
    """The budget's depths (``design``'s when given: a sweep's configured depths, so that a run still in progress
    counts no seed as complete before all of them are trained) and, per seed that has all of them, its loss curve
    (in depth order)."""
    depths = sorted(design) if design else sorted({r["depth"] for r in rows})
    by_seed: dict[int, dict[int, float]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["depth"]] = r["heldout_loss"]
    complete = {s: np.array([c[L] for L in depths]) for s, c in sorted(by_seed.items()) if set(depths) <= set(c)}
    return depths, complete


def slope_fit(budgets: Sequence[float], stars: Sequence[float]) -> tuple[float, float]:
    """``(c, s)`` of ``L* = c + s ln N`` by least squares."""
    s, c = np.polyfit(np.log(np.asarray(budgets, dtype=float)), np.asarray(stars, dtype=float), 1)
    return float(c), float(s)


def analyze_slope(results: Mapping[str, Mapping[str, Any]], bootstrap: int = 2000, seed: int = 0,
                  depths: Sequence[int] | None = None) -> dict[str, Any]:
    """Per budget L* (per seed, of the mean curve, bootstrap interval over seeds, the paper's); then the slope of
    L* in ln N with its interval, the paper's slope and whether zero slope is rejected (module docstring).
    ``depths``: the sweep's configured depths (a seed missing one of them is not complete yet)."""
    rng = np.random.default_rng(seed)
    rows = list(results.values())
    budgets, draws = [], []
    for budget in sorted({r["budget"] for r in rows}):
        swept, curves = _curves([r for r in rows if r["budget"] == budget], depths)
        if not curves or len(swept) < 2:
            continue
        stack = np.stack(list(curves.values()))
        picks = rng.integers(0, len(stack), size=(bootstrap, len(stack)))
        boot = np.array([best_depth(swept, stack[p].mean(axis=0)) for p in picks])
        draws.append(boot)
        budgets.append({"budget": budget, "depths": swept, "seeds": list(curves),
                        "per_seed": {str(s): best_depth(swept, c) for s, c in curves.items()},
                        "L_star": best_depth(swept, stack.mean(axis=0)),
                        "interval": [float(v) for v in np.percentile(boot, INTERVAL)],
                        "paper_L_star": fit_depth_for_budget(budget)})
    out: dict[str, Any] = {"budgets": budgets, "fit": None, "bootstrap": bootstrap,
                           "method": "L* = argmin over the swept depths of a parabola in ln L fitted to the mean "
                                     "loss curve; interval: seeds resampled within each budget"}
    if len(budgets) >= 2:
        ns = [b["budget"] for b in budgets]
        c, s = slope_fit(ns, [b["L_star"] for b in budgets])
        boot_s = np.array([slope_fit(ns, col)[1] for col in np.stack(draws, axis=1)])
        lo, hi = (float(v) for v in np.percentile(boot_s, INTERVAL))
        paper = slope_fit(ns, [b["paper_L_star"] for b in budgets])[1]
        out["fit"] = {"intercept": c, "slope": s, "interval": [lo, hi], "paper_slope": paper,
                      "zero_slope_rejected": not lo <= 0.0 <= hi, "paper_slope_in_interval": lo <= paper <= hi}
    return out


def slope_rows(slope: Mapping[str, Any]) -> list[list[Any]]:
    """Table rows: budget, seeds, L* per seed, L* of the mean curve, its interval, the paper's L*."""
    return [[b["budget"], len(b["seeds"]), ", ".join(f"{v:.2f}" for v in b["per_seed"].values()),
             round(b["L_star"], 2), f"{b['interval'][0]:.2f}-{b['interval'][1]:.2f}", round(b["paper_L_star"], 2)]
            for b in slope["budgets"]]


SLOPE_COLUMNS = ["budget", "complete seeds", "L* per seed", "L* (mean curve)", "95% bootstrap", "paper L*"]


def slope_text(slope: Mapping[str, Any]) -> str:
    """One line on the slope: ours with its interval, the paper's, and the zero-slope verdict."""
    f = slope.get("fit")
    if f is None:
        return "slope of L* in ln N: needs two or more budgets with complete seeds"
    verdict = "rejected" if f["zero_slope_rejected"] else "not rejected"
    paper = "inside" if f["paper_slope_in_interval"] else "outside"
    return (f"slope of L* in ln N: {f['slope']:.2f} (95% bootstrap {f['interval'][0]:.2f} to {f['interval'][1]:.2f}); "
            f"the paper's {f['paper_slope']:.2f} is {paper} it; zero slope is {verdict}")

