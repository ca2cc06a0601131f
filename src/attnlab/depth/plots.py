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


def frontier_figure(models: list[dict[str, Any]], path: str | Path, budgets: tuple[float, float] = (1e6, 2e12)) -> Path:
    """Depth against 12 L d^2 for each rule, and width against depth with ln d* = 5.039 + 0.0555 L,
    with ``models`` (from :func:`attnlab.depth.planner.known_models`) placed on both."""
    n = np.geomspace(*budgets, 200)
    fit_L = np.array([theory.fit_depth_for_budget(x) for x in n])
    thr_L = np.array([theory.solve_budget(x, lambda L: (L, 3.0 ** L), 1e-6, 60.0) for x in n])
    band = [(n / (12 * r * r)) ** (1 / 3) for r in KAPLAN_ASPECT]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax.fill_between(n, band[1], band[0], color="0.88", label="Kaplan: loss flat (d/L 33-715)")
    ax.plot(n, fit_L, "C0", lw=2, label="Levine fit: ln d* = 5.039 + 0.0555 L")
    ax.plot(n, thr_L, "C3--", label="Levine theory: L_th = log3 d")
    ax.plot(n, (n / (12 * NANOCHAT_ASPECT ** 2)) ** (1 / 3), "C2:", label="nanochat: d = 64 L")
    lo, hi = (theory.optimal_params(L) for L in theory.FIT_DEPTHS)
    ax.axvspan(lo, hi, color="C0", alpha=0.06, label="fit's measured range (L 6-48)")
    families = ("BERT", "GPT-2", "GPT-3", "Llama", "MobileLLM")
    labelled: set[tuple[int, int]] = set()
    for i, fam in enumerate(families):
        group = [m for m in models if m["name"].startswith(fam)]
        style = dict(marker="s" if fam == "MobileLLM" else "o", s=26, color=f"C{i + 4}", edgecolor="k", zorder=3)
        ax.scatter([m["kaplan"] for m in group], [m["depth"] for m in group], label=fam, **style)
        bx.scatter([m["depth"] for m in group], [m["width"] for m in group], label=fam, **style)
        for m in group:  # one label per distinct shape (BERT-base and GPT-2 share 12 x 768)
            if (m["depth"], m["width"]) not in labelled:
                labelled.add((m["depth"], m["width"]))
                bx.annotate(m["name"], (m["depth"], m["width"]), fontsize=6, xytext=(4, -3), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters 12 L d^2", ylabel="depth L",
           title="Recommended depth per budget")
    ax.legend(fontsize=7, loc="upper left")
    L = np.linspace(1, 110, 200)
    bx.plot(L, np.exp(theory.FIT_A + theory.FIT_B * L), "C0", lw=2, label="d*(L) = exp(5.039 + 0.0555 L)")
    bx.set(yscale="log", ylim=(100, 1e5), xlabel="depth L", ylabel="width d",
           title="Width against depth (above the line: deepen)")
    bx.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


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
    """Held-out loss against depth per budget (mean +- std over seeds), and each budget's best shape on
    width-against-depth axes next to the paper's law (and our fit when there are two or more depths)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, b in enumerate(summary["budgets"]):
        rows = b["depths"]
        ax.errorbar([r["depth"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] or 0 for r in rows],
                    marker="o", capsize=3, color=f"C{i}", label=f"N = {b['budget']:,} (best L = {b['best_depth']})")
        bx.scatter(b["best_depth"], b["best_width"], color=f"C{i}", s=60, edgecolor="k", zorder=3,
                   label=f"best at N = {b['budget']:,} (p = {b['best_p']:.2f})")
        bx.scatter(b["paper_depth"], b["paper_width"], facecolor="none", edgecolor=f"C{i}", s=60, lw=1.5, zorder=3,
                   label=f"paper's L* at N = {b['budget']:,}")
    ax.set(xscale="log", xlabel="depth L", ylabel="held-out loss (nats/char)", title="Fixed budgets: loss against depth")
    ax.set_xticks(sorted({r["depth"] for b in summary["budgets"] for r in b["depths"]}))
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    L = np.linspace(0.1, 12, 100)
    bx.plot(L, np.exp(theory.FIT_A + theory.FIT_B * L), "C7", lw=2, label="paper: ln d* = 5.039 + 0.0555 L")
    if summary.get("fit"):
        f = summary["fit"]
        bx.plot(L, np.exp(f["a"] + f["b"] * L), "k--", label=f"ours: ln d* = {f['a']:.2f} + {f['b']:.3f} L")
    bx.set(yscale="log", xlabel="depth L", ylabel="width d", title="Best shape per budget vs the paper's law")
    bx.legend(fontsize=7)
    return save_figure(fig, path)
