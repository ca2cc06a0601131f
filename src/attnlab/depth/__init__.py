"""Depth-to-width trade-off of self-attention (Levine et al. 2020, "Limits to Depth Efficiencies of
Self-Attention" / "The Depth-to-Width Interplay in Self-Attention").

``theory`` (threshold depth, separation rank, the fitted law) -> ``planner`` (depth/width for a budget
beside other published rules) -> ``separation`` (exact GF(p) separation ranks of small networks) ->
``sweep`` (train depth x width grids at fixed budgets, find the best depth). ``tour`` is the module's
headline experiment for ``attnlab tour``.

The names below are imported on first use, so ``import attnlab.depth`` (done by ``attnlab --help``) costs
nothing.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

#: public name -> the submodule that defines it
_EXPORTS = {
    "Architecture": "params", "count": "params",
    "assess": "planner", "known_models": "planner", "plan": "planner",
    "exact_rank": "separation",
    "SweepConfig": "sweep", "analyze": "sweep", "results_log": "sweep", "run_sweep": "sweep",
    "fit_depth_for_budget": "theory", "optimal_depth": "theory", "optimal_width": "theory",
    "separation_rank": "theory", "threshold_depth": "theory",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
