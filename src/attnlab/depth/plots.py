"""Figures: the planner's frontier with published shapes, separation rank against depth, sweep results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..core.plots import plt, save_figure
from . import theory
from .planner import KAPLAN_ASPECT, NANOCHAT_ASPECT
from .separation import RankResult

FRONTIER_CAPTION = ("Left: recommended depth per non-embedding budget by rule, with published models. Right: "
                    "width against depth; shapes above the blue line should deepen, below it widen.")


#: Where a point's label may go, tried in order: (dx, dy) in points from the marker, and the text alignment.
_LABEL_SPOTS = [(dx * r, dy * r, ha, va) for r in (1, 2.5, 4, 5.5, 7, 9)
                for dx, dy, ha, va in ((5, 0, "left", "center"), (-5, 0, "right", "center"),
                                       (0, 5, "center", "bottom"), (0, -5, "center", "top"),
                                       (4, 4, "left", "bottom"), (4, -4, "left", "top"),
                                       (-4, 4, "right", "bottom"), (-4, -4, "right", "top"))]


def place_labels(ax: plt.Axes, points: list[tuple[float, float]], labels: list[str], fontsize: float = 6) -> None:
    """Annotate each point with its label at the first spot (see ``_LABEL_SPOTS``) where the text stays
    inside the axes and overlaps no marker, label or legend, and its leader line (for the farther spots)
    crosses no other marker or label: a greedy placer, enough for a few dozen points."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    pixels = ax.transData.transform(points)
    radius = 4 * fig.dpi / 72  # half a marker (s = 26 points^2), in pixels
    markers = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in pixels]
    taken = list(markers) + ([ax.get_legend().get_window_extent(renderer)] if ax.get_legend() else [])

    def crosses(start: np.ndarray, end: np.ndarray, own: Bbox) -> bool:
        along = [start + t * (end - start) for t in np.linspace(0.15, 0.85, 15)]
        return any(b is not own and b.contains(*q) for b in taken for q in along)

    order = sorted(range(len(points)), key=lambda i: (-points[i][1], points[i][0]))  # top to bottom
    for i in order:
        for dx, dy, ha, va in _LABEL_SPOTS:
            far = abs(dx) + abs(dy) > 12
            leader = dict(arrowstyle="-", lw=0.4, color="0.5") if far else None
            text = ax.annotate(labels[i], points[i], xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=fontsize, arrowprops=leader)
            text.update_positions(renderer)
            bb = Text.get_window_extent(text, renderer).expanded(1.02, 1.15)  # the text, not its leader line
            inside = box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1
            free = inside and not any(bb.overlaps(t) for t in taken)
            end = np.array([bb.x0 + bb.x1, bb.y0 + bb.y1]) / 2
            if free and not (far and crosses(pixels[i], end, markers[i])):
                taken.append(bb)
                if far:  # the leader line is an obstacle for the labels still to come
                    taken += [Bbox.from_extents(*(q - 1), *(q + 1)) for q in
                              (pixels[i] + t * (end - pixels[i]) for t in np.linspace(0.15, 0.85, 15))]
                break
            text.remove()
        else:
            raise AssertionError(f"no free spot for the label {labels[i]!r}")  # pragma: no cover - a layout bug


def _shapes(models: list[dict[str, Any]]) -> dict[tuple[int, int], list[str]]:
    """The distinct (L, d) shapes, largest width first, with every model of that shape (BERT-base and GPT-2
    share 12 x 768)."""
    names: dict[tuple[int, int], list[str]] = {}
    for m in sorted(models, key=lambda m: (-m["width"], m["depth"])):
        names.setdefault((m["depth"], m["width"]), []).append(m["name"])
    return names


FAMILIES = ("BERT", "GPT-2", "GPT-3", "Llama", "MobileLLM", "SmolLM2", "Mistral", "Qwen2", "Gemma")


def frontier_axes(models: list[dict[str, Any]], budgets: tuple[float, float] = (1e6, 2e12)) -> plt.Figure:
    """Depth against 12 L d^2 for each rule, and width against depth with ln d* = 5.039 + 0.0555 L,
    with ``models`` (from :func:`attnlab.depth.planner.known_models`) placed on both, labelled on the right."""
    n = np.geomspace(*budgets, 200)
    fit_L = np.array([theory.fit_depth_for_budget(x) for x in n])
    thr_L = np.array([theory.solve_budget(x, lambda L: (L, 3.0 ** L), 1e-6, 60.0) for x in n])
    band = [(n / (12 * r * r)) ** (1 / 3) for r in KAPLAN_ASPECT]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(17, 5.6))
    ax.fill_between(n, band[1], band[0], color="0.88", label="Kaplan: loss flat (d/L 33-715)")
    ax.plot(n, fit_L, "C0", lw=2, label="Levine fit: ln d* = 5.039 + 0.0555 L")
    ax.plot(n, thr_L, "C3--", label="Levine theory: L_th = log3 d")
    ax.plot(n, (n / (12 * NANOCHAT_ASPECT ** 2)) ** (1 / 3), "C2:", label="nanochat: d = 64 L")
    lo, hi = (theory.optimal_params(L) for L in theory.FIT_DEPTHS)
    ax.axvspan(lo, hi, color="C0", alpha=0.06, label="fit's measured range (L 6-48)")
    for i, fam in enumerate(FAMILIES):
        group = [m for m in models if m["name"].startswith(fam)]
        style = dict(marker="s" if fam in ("MobileLLM", "SmolLM2") else "D" if i > 4 else "o", s=26,
                     color=f"C{(i + 4) % 10}", edgecolor="k", zorder=3)
        ax.scatter([m["kaplan"] for m in group], [m["depth"] for m in group], label=fam, **style)
        bx.scatter([m["depth"] for m in group], [m["width"] for m in group], **style)
    ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters 12 L d^2", ylabel="depth L",
           title="Recommended depth per budget")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    L = np.linspace(1, 110, 200)
    bx.plot(L, np.exp(theory.FIT_A + theory.FIT_B * L), "C0", lw=2, label="d*(L) = exp(5.039 + 0.0555 L)")
    bx.set(yscale="log", xlim=(0, 112), ylim=(100, 1e5), xlabel="depth L", ylabel="width d",
           title="Width against depth (above the line: deepen)")
    bx.legend(fontsize=7, loc="upper left")
    shapes = _shapes(models)  # numbered on the plot, named in the key beside it
    key = "\n".join(f"{i:>2}  {L} x {d}: {', '.join(names)}" for i, ((L, d), names) in enumerate(shapes.items(), 1))
    bx.text(1.03, 1.0, key, transform=bx.transAxes, fontsize=7, va="top", family="monospace")
    fig.subplots_adjust(left=0.05, right=0.72, bottom=0.2, top=0.94, wspace=0.17)  # fixed: labels need final axes
    place_labels(bx, [(float(L), float(d)) for L, d in shapes], [str(i) for i in range(1, len(shapes) + 1)],
                 fontsize=7)
    return fig


def frontier_figure(models: list[dict[str, Any]], path: str | Path,
                    budgets: tuple[float, float] = (1e6, 2e12)) -> Path:
    """:func:`frontier_axes` saved as a PNG at ``path``."""
    return save_figure(frontier_axes(models, budgets), path)


def separation_figure(results: list[RankResult], spectra: dict[str, np.ndarray], path: str | Path,
                      widths: tuple[int, ...] = (2, 3, 4, 16, 64)) -> Path:
    """log10 sep against depth from the closed form (lines; threshold log3 d_x dotted) with the exact
    GF(p) ranks (markers), and the normalized singular values of float64 grid matrices."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    L = np.linspace(1, 8, 200)
    for i, d in enumerate(widths):
        ax.plot(L, [theory.log_separation_rank(x, d) / math.log(10) for x in L], f"C{i}", label=f"d_x = {d}")
        ax.axvline(theory.threshold_depth(d), color=f"C{i}", ls=":", lw=1)
        pts = [r for r in results if r.width == d and r.heads < r.width]
        if pts:
            ax.scatter([r.depth for r in pts], [math.log10(r.rank) for r in pts], color=f"C{i}", s=40,
                       edgecolor="k", zorder=3)
    ax.set(yscale="log", xlabel="depth L", ylabel="log10 separation rank (log scale)",
           title="C((3^L-1)/2 + d_x, d_x); markers: exact GF(p) ranks; dotted: L = log3 d_x")
    ax.legend(fontsize=8)
    for name, s in spectra.items():
        bx.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-20), label=name)
    bx.set(xlabel="index", ylabel="singular value / largest", title="Float64 grid-matrix spectra (M x M)")
    bx.legend(fontsize=8)
    return save_figure(fig, path)


def sweep_figure(summary: dict[str, Any], path: str | Path) -> Path:
    """Held-out loss against depth per budget (mean +- std over seeds, the paper's L* dotted); L* per budget
    with its bootstrap interval against the paper's L*(N) and the zero-slope alternative; and each budget's best
    shape on width-against-depth axes next to the paper's law (and our fit when there are two or more depths)."""
    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(17, 4.6))
    depths = sorted({r["depth"] for b in summary["budgets"] for r in b["depths"]})
    for i, b in enumerate(summary["budgets"]):
        rows = b["depths"]
        ax.errorbar([r["depth"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] or 0 for r in rows],
                    marker="o", capsize=3, color=f"C{i}", label=f"N = {b['budget']:,} (best L = {b['best_depth']})")
        if depths[0] / 2 <= b["paper_depth"] <= depths[-1] * 2:
            ax.axvline(b["paper_depth"], color=f"C{i}", ls=":", lw=1.2)
        bx.scatter(b["best_depth"], b["best_width"], color=f"C{i}", s=60, edgecolor="k", zorder=3,
                   label=f"best at N = {b['budget']:,} (p = {b['best_p']:.2f})")
        bx.scatter(b["paper_depth"], b["paper_width"], facecolor="none", edgecolor=f"C{i}", s=60, lw=1.5, zorder=3,
                   label=f"paper's L* at N = {b['budget']:,}")
    unit = "nats/token" if summary.get("data") else "nats/char"
    if summary.get("data", {}).get("bayes_loss") is not None:
        ax.axhline(summary["data"]["bayes_loss"], color="0.4", ls="--", lw=1, label="best achievable (grammar)")
    ax.set(xscale="log", xlabel="depth L", ylabel=f"held-out loss ({unit})",
           title="Loss against depth (dotted: paper's L*)")
    ax.set_xticks(depths)
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7)
    _slope_axes(cx, summary["slope"])
    L = np.linspace(0.1, 12, 100)
    bx.plot(L, np.exp(theory.FIT_A + theory.FIT_B * L), "C7", lw=2, label="paper: ln d* = 5.039 + 0.0555 L")
    if summary.get("fit"):
        f = summary["fit"]
        bx.plot(L, np.exp(f["a"] + f["b"] * L), "k--", label=f"ours: ln d* = {f['a']:.2f} + {f['b']:.3f} L")
    bx.set(yscale="log", xlabel="depth L", ylabel="width d", title="Best shape per budget vs the paper's law")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _slope_axes(ax: plt.Axes, slope: dict[str, Any]) -> None:
    """L* (mean curve, bootstrap interval) against the budget, the paper's L*(N), and zero slope at our mean."""
    rows = slope["budgets"]
    if rows:
        n = np.array([b["budget"] for b in rows], dtype=float)
        star = np.array([b["L_star"] for b in rows])
        err = np.array([[b["L_star"] - b["interval"][0], b["interval"][1] - b["L_star"]] for b in rows]).T
        ax.errorbar(n, star, yerr=err, fmt="o", color="k", capsize=4, label="ours: L* (95% bootstrap)")
        span = np.geomspace(n.min() / 1.5, n.max() * 1.5, 50)
        ax.plot(span, [theory.fit_depth_for_budget(x) for x in span], "C3", label="paper: Levine et al. fit")
        ax.axhline(star.mean(), color="0.5", ls="--", label="zero slope (same L* everywhere)")
        if slope.get("fit"):
            f = slope["fit"]
            ax.plot(span, f["intercept"] + f["slope"] * np.log(span), "k:",
                    label=f"ours: slope {f['slope']:.2f} in ln N")
        ax.legend(fontsize=7)
    ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="best depth L*",
           title="Best depth against budget")
