"""``attnlab tour --only depth``: the planner and its frontier, exact separation ranks, a fixed-budget sweep.

Two profiles. ``quick`` (the default, about 20-25 s on 2 idle cores): the planner at five budgets, the exact
ranks up to L = 3, d_x = 3 (where the closed form bends at L = log3 d_x) and the head-dimension-1
exception, and a 3-model sweep at 25k parameters. ``full`` (``attnlab tour --only depth --full``, about
1.5 minutes): adds the L = 4 rank and trains 2 budgets x 4 depths at 200k tokens each.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.records import RunRecord
from . import theory
from .cli import plan_command, rank_command
from .planner import KNOWN_COLUMNS, KNOWN_TITLE, PLAN_COLUMNS, known_models, known_rows, plan, plan_rows
from .plots import FRONTIER_CAPTION, frontier_figure, separation_figure
from .separation import RANK_COLUMNS, RANK_TITLE, exact_rank, grid_matrix_float, numerical_rank, rank_rows
from .sweep import SweepConfig, run_sweep, summarize

#: Measured on an idle 2-core CPU (`make demo` from a fresh clone; `attnlab tour --full`, model cached):
#: quick 10 s, full 58 s.
EXPECTED_SECONDS = {"quick": 15, "full": 60}

PLAN_BUDGETS = (1e7, 1e8, 1.3e9, 1.75e11, 1e12)
#: (depths, widths, heads) of each ``attnlab depth rank`` call, per profile.
_RANKS_QUICK = [((1, 2, 3), (2, 3), (1,)), ((2,), (4,), (1, 2, 4))]
RANKS = {"quick": _RANKS_QUICK, "full": _RANKS_QUICK + [((4,), (2,), (1,))]}
#: The sweep per profile: quick is 1 budget x 3 depths at 100k tokens (a smoke result in seconds), full
#: 2 budgets x 4 depths at 200k tokens; the committed sweep (configs/depth/cpu.yaml) has 3 seeds.
SWEEPS = {"quick": SweepConfig(budgets=[25_000], depths=[1, 2, 4], seeds=[0], tokens=100_000, lr=1e-2,
                               warmup_steps=5, eval_tokens=16_384),
          "full": SweepConfig(budgets=[25_000, 100_000], depths=[1, 2, 4, 8], seeds=[0], tokens=200_000)}


def tour(out_dir: Path, seed: int = 0, full: bool = False) -> RunRecord:
    out_dir = Path(out_dir)
    profile = "full" if full else "quick"
    command = "attnlab tour --only depth" + (" --full" if full else "")
    sweep_config = SWEEPS[profile]
    rec = RunRecord(name="depth", title="depth: the depth-to-width interplay of self-attention (Levine et al. 2020)",
                    command=command, seed=seed,
                    config={"profile": profile, "plan_budgets": PLAN_BUDGETS, "ranks": RANKS[profile],
                            "sweep": sweep_config.__dict__})
    with rec.timed("planner"):
        plans = [plan(n) for n in PLAN_BUDGETS]
        rec.add_table(f"Planner: depth and width per rule, counted as {plans[0].convention}", PLAN_COLUMNS,
                      plan_rows(plans), command=plan_command(PLAN_BUDGETS))
        models = known_models()
        known = plan_command(PLAN_BUDGETS, known=True)
        rec.add_table(KNOWN_TITLE, KNOWN_COLUMNS, known_rows(models), command=known)
        L1t = theory.fit_depth_for_budget(1e12)
        rec.metrics.update({"fit_width_L6": round(theory.optimal_width(6)),
                            "fit_width_L48": round(theory.optimal_width(48)),
                            "fit_depth_1T": round(L1t, 1), "fit_width_1T": round(theory.optimal_width(L1t))})
        rec.add_figure(frontier_figure(models, out_dir / "frontier.png").resolve(), FRONTIER_CAPTION,
                       command=plan_command(PLAN_BUDGETS, known=True, out=["-o", "DIR"]))
    with rec.timed("separation"):
        results = []
        for depths, widths, heads in RANKS[profile]:
            found = [exact_rank(L, d, h, seed=seed) for L in depths for d in widths for h in heads]
            rec.add_table(f"{RANK_TITLE}: L in {list(depths)}, d_x in {list(widths)}, H in {list(heads)}",
                          RANK_COLUMNS, rank_rows(found),
                          command=rank_command(depths, widths, heads, seed=seed))
            results += found
        generic = [r for r in results if r.heads < r.width]  # head dim 1 is the known exception (69 vs 70)
        rec.metrics["ranks_matching_closed_form"] = f"{sum(r.rank == r.closed_form for r in generic)}/{len(generic)}"
        rec.metrics["rank_L2_d4_head_dim_1"] = next(r.rank for r in results
                                                    if r.depth == 2 and r.heads == r.width == 4)
        rec.add_table("Width a shallower network needs for the same separation rank (closed form, exact integers)",
                      ["reference L x d_x", "regime", "width at L-1", "width at L-2"],
                      [[f"{L} x {d}", theory.regime(L, d), theory.width_to_match(L, d, L - 1),
                        theory.width_to_match(L, d, L - 2)] for L, d in ((3, 64), (6, 64), (6, 16))])
        float_rows = []
        for L, d, m in ((2, 4, 100), (3, 4, 80)):
            n, _ = numerical_rank(grid_matrix_float(L, d, 1, m, "polynomial", seed))
            exact = exact_rank(L, d, templates=m, seed=seed).rank
            float_rows.append([L, d, m, n, exact, theory.separation_rank(L, d)])
        rec.add_table("Floating point is not enough: float64 SVD rank (rtol 1e-10) vs exact GF(p) rank, same M "
                      "(the float count depends on rounding, so it may differ by a few on another CPU)",
                      ["L", "d_x", "M", "float64 SVD rank", "exact rank", "closed form"], float_rows)
        spectra = {}
        for block in ("polynomial", "softmax"):
            n, s = numerical_rank(grid_matrix_float(2, 4, 1, 100, block, seed))
            spectra[f"{block} L=2 d_x=4 (float rank {n} at 1e-10)"] = s
        rec.add_figure(separation_figure(results, spectra, out_dir / "separation.png").resolve(),
                       "Left: the closed form against depth for several widths (it bends from ~3^L to ~L d_x at "
                       "L = log3 d_x, dotted) with exact ranks. Right: float64 spectra; the softmax block's grid "
                       "matrix is numerically full rank, the polynomial one drops at 70.")
    with rec.timed("sweep"):
        sweep_dir = out_dir / "sweep"
        run_sweep(sweep_config, sweep_dir, workers=1, progress=sys.stderr.isatty())
        srec = summarize(sweep_dir, command, seed, save_record=False)
        rec.tables += srec.tables
        rec.figures += [type(f)(str(Path(f.path).resolve()), f.caption) for f in srec.figures]
        rec.metrics.update({f"tour_{k}": v for k, v in srec.metrics.items()})
    rec.notes += [
        f"Profile {profile!r}" + ("." if full else "; `attnlab tour --only depth --full` runs the longer one "
                                  "(2 budgets x 4 depths, 200k tokens each, and the L = 4 rank; about 1.5 minutes)."),
        "Separation rank here is measured for N=2 positions; the closed form is an exact measurement, the "
        "paper's own bounds (Theorems 1-2) carry constants we could not check against the full text.",
        f"The tour's sweep uses 1 seed and {sweep_config.tokens:,} characters per model: read its best depth as a "
        "smoke result (short training also favours shallow models); the committed sweep "
        "(docs/results/depth_sweep, docs/depth.md) has 3 seeds and 800k characters per model.",
    ]
    return rec
