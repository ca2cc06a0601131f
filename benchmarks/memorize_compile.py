"""What ``torch.compile`` would buy the harness's fit (issue 14, item 6: a lever measured, not adopted).

The step of ``benchmarks/memorize.py``'s harness side (the batched, cached forward and its backward, Adam, the exact
check) with the forward eager and with ``torch.compile(dynamic=True)`` of it, at the benchmark's setting, for S
prompts fitted together at length m. First the compile itself is timed (the first call of each shape class: S >= 2
and S = 1 compile separately); then rounds alternate eager and compiled over the (S, m) cells, each a fit of
``--steps`` steps from the same initial prompts; the medians of CPU time per step are compared. The two paths round
differently, so their fits are compared too (steps to memorize per prompt). Inductor's cache goes to a fresh
temporary folder, so the compile time is a cold start's. Raw numbers: benchmarks/results/memorize_compile.json.

Run: python benchmarks/memorize_compile.py [--threads 1] [--rounds 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.clikit import positive_int
from attnlab.core.runtime import environment, set_threads
from attnlab.memorize.backbone import Backbone
from attnlab.memorize.settings import DEFAULTS
from attnlab.memorize.sweep import build
from attnlab.memorize.tune import draw_prompt, train_prompts_until_exact

CELLS = ((1, 16), (5, 4), (5, 16), (5, 64))  # (prompts fitted together, prompt length)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--steps", type=positive_int, default=100)
    ap.add_argument("-o", "--out", default=str(Path(__file__).parent / "results" / "memorize_compile.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="attnlab-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read at each compile: a cold start's compile time
        return run(args)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    data, cfg, tune = build({**DEFAULTS, "n_pairs": 32, "seq_len": 8})
    tune = replace(tune, max_steps=args.steps)
    backbone = Backbone(cfg)
    inputs = backbone.input_states(data.tokens)
    targets = data.targets[:, -1:]  # labels at the last position: the harness's last-only forward

    def eager(p: torch.Tensor) -> torch.Tensor:
        return backbone(p, inputs, 0, True)

    paths = {"eager": eager, "compiled": torch.compile(eager, dynamic=True)}

    def prompts(S: int, m: int) -> torch.Tensor:
        return torch.stack([draw_prompt(m, cfg.d_model, s, tune.prompt_init_std) for s in range(S)])

    compile_s = {}
    for S in (5, 1):  # the first call of each shape class compiles
        t0 = time.perf_counter()
        paths["compiled"](prompts(S, 16).requires_grad_(True)).sum().backward()
        compile_s[f"S={S}"] = time.perf_counter() - t0
    print(f"compile (first calls): {compile_s}", file=sys.stderr)
    times: dict[str, dict[str, list[float]]] = {name: {f"{S}x{m}": [] for S, m in CELLS} for name in paths}
    steps: dict[str, dict[str, list[int]]] = {name: {} for name in paths}
    for r in range(args.rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            for S, m in CELLS:
                c0 = time.process_time()
                runs = train_prompts_until_exact(prompts(S, m), paths[name], targets, tune)
                n = max(x["steps"] for x in runs)
                times[name][f"{S}x{m}"].append(1000 * (time.process_time() - c0) / max(n, 1))
                steps[name][f"{S}x{m}"] = [x["steps"] if x["memorized"] else None for x in runs]
            print(f"round {r + 1} {name} done", file=sys.stderr)
    med = {name: {cell: statistics.median(v) for cell, v in cells.items()} for name, cells in times.items()}
    result = {"threads": args.threads, "rounds": args.rounds, "max_steps": args.steps, "env": environment(),
              "compile_s": compile_s, "cpu_ms_per_step_median": med,
              "speedup": {cell: med["eager"][cell] / med["compiled"][cell] for cell in med["eager"]},
              "per_round_ms": times, "steps_to_memorize": steps}
    atomic_write_json(args.out, result)
    print(f"{'S x m':<8}{'eager ms/step':>15}{'compiled':>10}{'speedup':>9}  steps eager | compiled")
    for cell in med["eager"]:
        print(f"{cell:<8}{med['eager'][cell]:>15.2f}{med['compiled'][cell]:>10.2f}{result['speedup'][cell]:>8.2f}x  "
              f"{steps['eager'][cell]} | {steps['compiled'][cell]}")
    print(f"compile time (first call per shape class, s): {compile_s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
