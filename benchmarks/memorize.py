"""The m* search like for like (issue 14, item 6): the whole p(m) estimate at one setting through the batched, cached
harness against the same estimate through PEFT prompt tuning, as a PEFT user would run it.

Both sides have the same network (the harness's backbone and its exact transformers GPT-2 twin,
``attnlab.memorize.gpt2``), data, criterion (teacher-forced argmax over the whole vocabulary at the target
positions), optimizer (Adam, the same lr, a gradient-norm clip per fit), initial prompts (PEFT's prompt embedding is
set to the harness's draw for the same seed), stopping rule (the first exactly memorizing step, or the budget) and
search (doubling, then bisection on p(m), ``--prompt-seeds`` seeds per length). The harness fits a length's seeds as
one batch (``fit_prompts``); PEFT fits them one after another with ``get_peft_model`` and a full forward per step.

Both sides fit the same lengths: an untimed first run of the harness's search (also the warm-up) fixes the plan, the
lengths it tried in order; in every round the harness runs its search again (deterministic on one machine: it tries
the plan, which is checked) and PEFT fits the plan's lengths, every seed of each. Near m* a float32 fit can fall the
other way on the other side's kernels, so PEFT's own search may try other lengths; it runs once more, after the
rounds, and is reported beside (not in the ratio): two searches that tried different lengths are not the same work.

Rounds alternate which side runs first; each side's process (CPU) time and wall time are recorded per round; the
ratio is of medians. Torch threads are pinned. The fits themselves are compared too: the share of (length, seed)
fits with the same outcome and the same step count on both sides (they agree up to float32 rounding, which near m*
can flip an outcome). Raw numbers go to benchmarks/results/memorize.json.

Run: python benchmarks/memorize.py [--threads 1] [--rounds 5] [--n-pairs 32] [--seq-len 8] [--max-steps 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from attnlab.core.atomic import atomic_write_json
from attnlab.core.clikit import positive_int
from attnlab.core.runtime import environment, set_threads
from attnlab.memorize.backbone import Backbone
from attnlab.memorize.gpt2 import to_gpt2
from attnlab.memorize.peft_adapter import PeftMemorizeConfig, fit_peft_prompt
from attnlab.memorize.search import backbone_batch_probe, p_of_m_search, prompt_seed
from attnlab.memorize.settings import DEFAULTS
from attnlab.memorize.statistic import bootstrap_interval, m_star_q
from attnlab.memorize.sweep import build
from attnlab.memorize.tune import draw_prompt


def peft_batch_probe(backbone: Backbone, data, tune, seed: int):
    """The batch probe of :func:`attnlab.memorize.search.backbone_batch_probe` done the PEFT way: for each seed, a
    fresh prompt-tuning adapter on the backbone's GPT-2 twin for length m, fitted alone."""
    config = PeftMemorizeConfig(lr=tune.lr, clip=tune.clip, max_steps=tune.max_steps, margin=tune.margin)
    twins: dict[int, Any] = {}

    def probe(m: int, restarts: list[int]) -> list[dict[str, Any]]:
        model = twins.setdefault(m, to_gpt2(backbone, m))
        out = []
        for r in restarts:
            s = prompt_seed(seed, m, r)
            init = draw_prompt(m, backbone.d_model, s, tune.prompt_init_std)  # the harness's draw for this seed
            out.append(fit_peft_prompt(model, data, m, config, s, init=init)[0].summary())
        return out

    return probe


def timed(fn) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def fit_plan(probe, plan: list[int], n_seeds: int) -> list[dict[str, Any]]:
    """Every seed of every length in ``plan``, in order: the fits of a search that tried those lengths."""
    return [{"m": m, "restart": r, **rec} for m in plan for r, rec in enumerate(probe(m, list(range(n_seeds))))]


def summarize(log: list[dict[str, Any]], wall: float, cpu: float) -> dict[str, Any]:
    """One timed run's record: its time, m*_0.5 and its bootstrap interval over the lengths it fitted, and every
    fit's outcome."""
    table = {}
    for f in log:
        table.setdefault(f["m"], []).append(f["memorized"])
    return {"wall_s": wall, "cpu_s": cpu, "m_star": m_star_q(table), "ci": list(bootstrap_interval(table, n_boot=500)),
            "p": {m: sum(v) / len(v) for m, v in table.items()}, "lengths": list(table), "fits": len(log),
            "steps": sum(f["steps"] for f in log),
            "outcomes": {f"{f['m']}/{f['restart']}": [f["memorized"], f["steps"]] for f in log}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--rounds", type=positive_int, default=5, help="timed runs per side, order alternating (>= 5)")
    ap.add_argument("--n-pairs", type=positive_int, default=32)
    ap.add_argument("--seq-len", type=positive_int, default=8)
    ap.add_argument("--max-steps", type=positive_int, default=200)
    ap.add_argument("--m-max", type=positive_int, default=64)
    ap.add_argument("--prompt-seeds", type=positive_int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", default=str(Path(__file__).parent / "results" / "memorize.json"))
    args = ap.parse_args()
    set_threads(args.threads)
    warnings.simplefilter("ignore")  # peft/transformers deprecation notices, once per fit otherwise
    settings = {**DEFAULTS, "n_pairs": args.n_pairs, "seq_len": args.seq_len, "max_steps": args.max_steps,
                "m_max": args.m_max, "prompt_seeds": args.prompt_seeds, "seed": args.seed}
    data, cfg, tune = build(settings)
    backbone = Backbone(cfg)
    harness = backbone_batch_probe(backbone, data, tune=tune, seed=args.seed)
    peft = peft_batch_probe(backbone, data, tune, args.seed)

    def search(probe) -> list[dict[str, Any]]:
        return p_of_m_search(probe, args.m_max, args.prompt_seeds, [args.max_steps], m_start=1, n_boot=1)[1]

    plan = list(dict.fromkeys(f["m"] for f in search(harness)))  # untimed: the warm-up, and the lengths to fit
    peft(1, [0])
    print(f"plan (the harness's search): m = {plan}", file=sys.stderr)
    sides = {"harness (batched, cached)": lambda: search(harness),
             "peft prompt tuning (GPT-2 twin)": lambda: fit_plan(peft, plan, args.prompt_seeds)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    loads = [os.getloadavg()]
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            log, wall, cpu = timed(sides[name])
            runs[name].append(summarize(log, wall, cpu))
            print(f"round {r + 1} {name}: m*_0.5 = {runs[name][-1]['m_star']} ({len(log)} fits) in {wall:.1f} s "
                  f"wall, {cpu:.1f} s CPU", file=sys.stderr)
        loads.append(os.getloadavg())
    own = summarize(*timed(lambda: search(peft)))
    print(f"peft's own search: m*_0.5 = {own['m_star']}, m = {own['lengths']}, {own['cpu_s']:.1f} s CPU",
          file=sys.stderr)
    names = list(sides)
    ours, theirs = (runs[name][0]["outcomes"] for name in names)
    same_outcome = sum(ours[k][0] == theirs[k][0] for k in ours)
    same_steps = sum(ours[k] == theirs[k] for k in ours)
    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("wall_s", "cpu_s")} for name, rs in runs.items()}
    result = {
        "settings": settings, "threads": args.threads, "rounds": args.rounds, "env": environment(),
        "loadavg": loads, "plan": plan, "median": med,
        "ratio": {k: med[names[1]][k] / med[names[0]][k] for k in ("wall_s", "cpu_s")},
        "per_round": {name: [{k: v for k, v in x.items() if k != "outcomes"} for x in rs]
                      for name, rs in runs.items()},
        "harness_tried_the_plan": all(x["lengths"] == plan for x in runs[names[0]]),
        "rounds_agree_within_side": {name: all(x["outcomes"] == rs[0]["outcomes"] for x in rs)
                                     for name, rs in runs.items()},
        "fits_compared": len(ours), "same_outcome": same_outcome, "same_steps": same_steps,
        "ms_per_prompt_step": {name: 1000 * med[name]["cpu_s"] / statistics.median(x["steps"] for x in runs[name])
                               for name in names},
        "peft_own_search": {k: v for k, v in own.items() if k != "outcomes"},
    }
    atomic_write_json(args.out, result)
    print(f"p(m) estimate, n_pairs={args.n_pairs} seq_len={args.seq_len} d_model={cfg.d_model} layers={cfg.n_layers}, "
          f"{args.prompt_seeds} prompt seeds per length, budget {args.max_steps} steps, {args.threads} thread(s); "
          f"both sides fit m = {plan}; median of {args.rounds} rounds, order alternating")
    print(f"{'side':<34}{'m*_0.5':>8}{'fits':>6}{'wall s':>9}{'CPU s':>9}{'CPU ms/prompt-step':>20}")
    for name in names:
        x = runs[name][0]
        print(f"{name:<34}{x['m_star']!s:>8}{x['fits']:>6}{med[name]['wall_s']:>9.1f}{med[name]['cpu_s']:>9.1f}"
              f"{result['ms_per_prompt_step'][name]:>20.2f}")
    print(f"peft / harness: {result['ratio']['cpu_s']:.1f}x CPU time, {result['ratio']['wall_s']:.1f}x wall time; "
          f"fits with the same outcome {same_outcome}/{len(ours)}, the same steps too {same_steps}/{len(ours)}")
    print(f"peft's own search: m*_0.5 = {own['m_star']} from m = {own['lengths']} ({own['fits']} fits) in "
          f"{own['cpu_s']:.1f} s CPU, {own['wall_s']:.1f} s wall")
    print(f"raw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
