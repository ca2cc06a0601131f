"""depth benchmark: training throughput against depth at a fixed parameter budget (ratio to depth 1),
and the exact-rank cost against the closed form's size. Results in benchmarks/results/depth.json.

Throughput: the sweep's model and recipe, one thread, the depths interleaved and repeated (median and
spread), so the ratios hold on a box whose other cores are busy.

    python benchmarks/depth.py [--budget 150000] [--steps 15] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, seed_everything, set_threads
from attnlab.depth.model import GPT
from attnlab.depth.separation import exact_rank
from attnlab.depth.sweep import SweepConfig, shape_for_budget

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=150_000)
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    seed_everything(0)
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
