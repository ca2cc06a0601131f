"""depth benchmark: training throughput against depth at a fixed parameter budget (ratio to depth 1),
and the exact-rank cost against the closed form's size. Results in benchmarks/results/depth.json.

Throughput: the sweep's model and recipe, one thread, the depths interleaved and repeated (median and
spread), so the ratios hold on a box whose other cores are busy.

    python benchmarks/depth.py [--budget 150000] [--steps 15] [--repeats 3] [--threads 1]

With ``--config``: a sweep config's own recipe (data source, lr groups, seq_len) for its first budget and seed,
``--steps`` steps per depth, and from it the expected wall time of each full model (results in
benchmarks/results/depth_slope.json), the measurement that sizes a CPU run; for the synthetic grammar also its
exact best loss and unigram entropy on the config's held-out windows:

    python benchmarks/depth.py --config configs/depth/slope_cpu.yaml --depths 1 16 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, seed_everything, set_threads
from attnlab.depth.data import data_source
from attnlab.depth.model import GPT
from attnlab.depth.separation import exact_rank
from attnlab.depth.sweep import SweepConfig, grid, load_config, shape_for_budget, train_one

RESULTS = Path(__file__).parent / "results"


def tokens_per_second(depth: int, budget: int, steps: int, config: SweepConfig) -> float:
    width, heads, _ = shape_for_budget(budget, depth, config.head_dim, config.tolerance)
    model = GPT(128, config.seq_len, depth, width, heads)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    x = torch.randint(0, 128, (config.batch_size, config.seq_len + 1))
    t0 = time.perf_counter()
    for _ in range(steps):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * config.batch_size * config.seq_len / (time.perf_counter() - t0)


def recipe_throughput(path: str, depths: list[int], steps: int) -> list[dict]:
    """Tokens/s of ``train_one`` on the config's first budget (seed 0) at each depth, over ``steps`` steps of
    its recipe, and the seconds a full model (its ``steps_for``) would take at that rate."""
    from dataclasses import replace

    config = load_config(path)
    batch = config.batch_size * config.seq_len
    short = replace(config, tokens_per_param=None, tokens=steps * batch, warmup_steps=min(5, steps - 1),
                    eval_tokens=batch)
    jobs = {j["depth"]: j for j in grid(config) if j["seed"] == config.seeds[0] and j["budget"] == config.budgets[0]}
    rows = []
    for L in depths:
        row = train_one(jobs[L], short)
        full = config.steps_for(jobs[L]["non_embedding"])
        rows.append({"depth": L, "width": jobs[L]["width"], "non_embedding": jobs[L]["non_embedding"],
                     "tok_s": row["tokens_per_second"], "full_steps": full,
                     "expected_model_s": round(full * batch / row["tokens_per_second"])})
        print(f"L={L:>2} d={jobs[L]['width']:>4}  {row['tokens_per_second']:>8.0f} tok/s  full model: {full} steps, "
              f"~{rows[-1]['expected_model_s'] / 60:.0f} min")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=150_000)
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=None, help="measure this sweep config's recipe instead (see above)")
    args = ap.parse_args()
    set_threads(args.threads)
    seed_everything(0)
    if args.config:
        rows = recipe_throughput(args.config, args.depths, args.steps)
        config = load_config(args.config)
        jobs = grid(config)
        tokens = sum(config.steps_for(j["non_embedding"]) * config.batch_size * config.seq_len for j in jobs)
        six_nd = sum(6 * j["non_embedding"] * config.steps_for(j["non_embedding"]) * config.batch_size * config.seq_len
                     for j in jobs)
        print(f"whole grid: {len(jobs)} models, {tokens:.3e} training tokens, 6 N D = {six_nd:.2e} FLOPs")
        data = data_source(config).describe(config.seq_len, config.eval_tokens)
        print(", ".join(f"{k}: {v:.4f}" for k, v in data.items() if isinstance(v, float)) or data)
        atomic_write_json(RESULTS / "depth_slope.json", {"throughput": rows, "grid": {"models": len(jobs),
                          "tokens": tokens, "six_nd_flops": six_nd}, "data": data, "args": vars(args),
                          "env": environment()})
        return
    config = SweepConfig(budgets=[args.budget], depths=args.depths)
    runs: dict[int, list[float]] = {L: [] for L in args.depths}
    for _ in range(args.repeats):  # interleaved: every depth once per round
        for L in args.depths:
            runs[L].append(tokens_per_second(L, args.budget, args.steps, config))
    base = statistics.median(runs[args.depths[0]])
    print(f"throughput at {args.budget:,} non-embedding parameters, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'depth':>5}  {'tok/s':>9}  {'spread':>15}  {'ratio to L=' + str(args.depths[0]):>12}")
    rows = []
    for L in args.depths:
        med = statistics.median(runs[L])
        rows.append({"depth": L, "median_tok_s": med, "min": min(runs[L]), "max": max(runs[L]), "ratio": med / base})
        print(f"{L:>5}  {med:>9.0f}  {min(runs[L]):>7.0f}-{max(runs[L]):<7.0f}  {med / base:>12.2f}")
    ranks = []
    for L, d in ((2, 4), (3, 3), (4, 2), (3, 4)):
        r = exact_rank(L, d)
        ranks.append({"depth": L, "width": d, "rank": r.rank, "templates": r.templates, "seconds": r.seconds})
        print(f"exact rank L={L} d_x={d}: {r.rank} (M={r.templates}) in {r.seconds:.2f} s")
    atomic_write_json(RESULTS / "depth.json", {"throughput": rows, "exact_rank": ranks, "args": vars(args),
                                               "env": environment()})


if __name__ == "__main__":
    main()
