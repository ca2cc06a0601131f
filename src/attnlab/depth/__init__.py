"""Depth-to-width trade-off of self-attention (Levine et al. 2020, "Limits to Depth Efficiencies of
Self-Attention" / "The Depth-to-Width Interplay in Self-Attention").

``theory`` (threshold depth, separation rank, the fitted law) -> ``planner`` (depth/width for a budget
beside other published rules) -> ``separation`` (exact GF(p) separation ranks of small networks) ->
``sweep`` (train depth x width grids at fixed budgets, find the best depth).
"""

from __future__ import annotations

from pathlib import Path

from .params import Architecture, count
from .planner import assess, known_models, plan
from .separation import exact_rank
from .sweep import SweepConfig, analyze, run_sweep
from .theory import fit_depth_for_budget, optimal_depth, optimal_width, separation_rank, threshold_depth

__all__ = ["Architecture", "SweepConfig", "analyze", "assess", "count", "exact_rank", "fit_depth_for_budget",
           "known_models", "optimal_depth", "optimal_width", "plan", "run_sweep", "separation_rank",
           "threshold_depth", "tour"]


def tour(out_dir: Path, seed: int = 0):
    from .tourstep import run

    return run(Path(out_dir), seed)
