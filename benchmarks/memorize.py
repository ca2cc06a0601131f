"""Time to find m* (n_pairs=64, seq_len=8): the cached harness against the same search through PEFT on an
equivalent model (a random Llama of the same width, depth, heads, FFN and vocabulary, same init scale).

Two ratios from one run, threads pinned:
- per optimiser step at fixed m, interleaved and repeated (median and spread): cached harness, the same
  backbone without the prompt cache (naive concatenation), PEFT prompt tuning and PEFT prefix tuning;
- the full m* search (doubling + bisection + restarts, same data, budget and prompt seeds) with each, in
  ``--search-rounds`` rounds whose order alternates (harness first, then PEFT first, ...), median seconds.
The search ratio also reflects that the two models need different m* and steps; the per-step ratio is the
like-for-like cost. Raw numbers go to benchmarks/results/memorize.json.

Run: python benchmarks/memorize.py [--threads 1] [--repeats 5] [--search-rounds 2] [--skip-search]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, seed_everything, set_threads
from attnlab.memorize.backbone import Backbone
from attnlab.memorize.peft_adapter import PeftMemorizeConfig, fit_peft_prompt, load_model, peft_search
from attnlab.memorize.search import find_m_star
from attnlab.memorize.settings import DEFAULTS
from attnlab.memorize.sweep import build
from attnlab.memorize.tune import TuneConfig, fit_prompt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps per timing")
    ap.add_argument("--m", type=int, nargs="+", default=[16, 64], help="prompt lengths for the per-step timing")
    ap.add_argument("--search-rounds", type=int, default=1, help="full searches per method, order alternating")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", default=str(Path(__file__).parent / "results" / "memorize.json"))
    args = ap.parse_args()
    set_threads(args.threads)
    seed_everything(args.seed)
    settings = {**DEFAULTS, "n_pairs": 64, "seq_len": 8, "seed": args.seed}
    data, cfg, tune = build(settings)
    backbone = Backbone(cfg)
    llama = load_model("random-llama", settings, seed=args.seed)
    timing = TuneConfig(lr=tune.lr, clip=tune.clip, max_steps=args.steps)

    def per_step(fn) -> float:
        fit = fn()
        return fit.seconds / max(fit.steps, 1)

    methods = {
        "cached harness": lambda m: per_step(lambda: fit_prompt(backbone, data, m, config=timing)),
        "harness, no prompt cache": lambda m: per_step(lambda: fit_prompt(backbone, data, m, config=timing,
                                                                          forward=backbone.forward_naive)),
        "peft prompt tuning": lambda m: per_step(lambda: fit_peft_prompt(
            llama, data, m, PeftMemorizeConfig(lr=tune.lr, clip=tune.clip, max_steps=args.steps, method="prompt"))[0]),
        "peft prefix tuning": lambda m: per_step(lambda: fit_peft_prompt(
            llama, data, m, PeftMemorizeConfig(lr=tune.lr, clip=tune.clip, max_steps=args.steps, method="prefix"))[0]),
    }
    result = {"settings": settings, "threads": args.threads, "repeats": args.repeats, "steps": args.steps,
              "env": environment(), "loadavg_start": os.getloadavg(), "per_step_ms": {}, "per_step_ratio": {}}
    for m in args.m:
        samples: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(args.repeats):  # interleaved: every method once per round
            for name, fn in methods.items():
                samples[name].append(1000 * fn(m))
        result["per_step_ms"][m] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                    for k, v in samples.items()}
        base = result["per_step_ms"][m]["cached harness"]["median"]
        result["per_step_ratio"][m] = {k: v["median"] / base for k, v in result["per_step_ms"][m].items()}
    print(f"n_pairs=64 seq_len=8 d_model={cfg.d_model} layers={cfg.n_layers}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved rounds of {args.steps} steps")
    print(f"{'method':<26}" + "".join(f"{'m=' + str(m) + ' ms/step':>16}{'ratio':>8}" for m in args.m))
    for name in methods:
        print(f"{name:<26}" + "".join(f"{result['per_step_ms'][m][name]['median']:>16.2f}"
                                      f"{result['per_step_ratio'][m][name]:>7.1f}x" for m in args.m))
    if not args.skip_search:
        searches = {
            "cached harness": lambda: find_m_star(data, backbone, tune=tune, m_max=settings["m_max"],
                                                  restarts=settings["restarts"], seed=args.seed),
            "peft prompt tuning": lambda: peft_search(
                llama, data, PeftMemorizeConfig(lr=tune.lr, clip=tune.clip, max_steps=tune.max_steps, method="prompt"),
                m_max=settings["m_max"], restarts=settings["restarts"], seed=args.seed),
        }
        seconds: dict[str, list[float]] = {k: [] for k in searches}
        found = {}
        for r in range(args.search_rounds):  # alternate the order so neither side always runs first
            for name in (list(searches) if r % 2 == 0 else list(searches)[::-1]):
                t0 = time.perf_counter()
                found[name] = searches[name]()
                seconds[name].append(time.perf_counter() - t0)
        rows = []
        for name, res in ((k, found[k]) for k in searches):
            total = sum(p["steps"] for p in res.probes)
            t = statistics.median(seconds[name])
            rows.append({"method": name, "m_star": res.m_star, "probes": len(res.probes), "total_steps": total,
                         "seconds": t, "seconds_per_round": seconds[name], "ms_per_step": 1000 * t / max(total, 1)})
        result["search"] = rows
        result["search_rounds"] = args.search_rounds
        result["search_ratio"] = rows[1]["seconds"] / rows[0]["seconds"]
        print(f"\nfull m* search (budget {tune.max_steps} steps x {settings['restarts']} restarts, "
              f"m_max {settings['m_max']}; median of {args.search_rounds} round(s), order alternating)")
        print(f"{'method':<22}{'m*':>6}{'probes':>8}{'steps':>8}{'seconds':>10}{'ms/step':>9}")
        for r in rows:
            print(f"{r['method']:<22}{r['m_star']!s:>6}{r['probes']:>8}{r['total_steps']:>8}{r['seconds']:>10.1f}"
                  f"{r['ms_per_step']:>9.2f}")
        print(f"time to find m*: peft / cached harness = {result['search_ratio']:.1f}x "
              f"(per step in the search: {rows[1]['ms_per_step'] / rows[0]['ms_per_step']:.1f}x)")
    result["loadavg_end"] = os.getloadavg()  # other work on the machine slows both sides; ratios are interleaved
    atomic_write_json(args.out, result)
    print(f"raw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
