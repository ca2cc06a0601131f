"""DAC's training-step cost: one optimiser step (forward, loss with matching, backward, AdamW) with the
C-decoder over the same step without it, on the synthetic-digits batch the committed comparison uses
(48 px, 32 images, d=64, 16 queries, 3 decoder layers). Also the eval forward pass, which DAC must
leave unchanged. Interleaved repeats, median and spread, threads pinned, one process.
Raw numbers go to benchmarks/results/detr.json. Target: DAC / baseline <= 1.5x per step.

Run: python benchmarks/detr.py [--threads 1] [--repeats 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, seed_everything, set_threads
from attnlab.detr.data import collate, make_transforms, open_split
from attnlab.detr.losses import LossConfig, detr_loss
from attnlab.detr.model import Detector, ModelConfig
from attnlab.detr.synthetic import make_synthetic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="optimiser steps per timing")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detr.json"))
    args = ap.parse_args()
    set_threads(args.threads)
    seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic(tmp, "synthetic-digits", seed=0, n_train=args.batch_size, n_val=1)
        ds = open_split(tmp, "train", make_transforms("none", True, 48))
        images, mask, targets = collate([ds[i] for i in range(args.batch_size)])
    models, opts = {}, {}
    for name, dac in (("baseline", False), ("dac", True)):
        torch.manual_seed(0)
        models[name] = Detector(ModelConfig(num_classes=10, dac=dac))
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-3)
    loss_cfg = LossConfig()

    def train_steps(name: str) -> float:
        m, opt = models[name].train(), opts[name]
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss, _ = detr_loss(m(images, mask), targets, loss_cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / args.steps * 1000

    @torch.no_grad()
    def eval_steps(name: str) -> float:
        m = models[name].eval()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            m(images, mask)
        return (time.perf_counter() - t0) / args.steps * 1000

    for name in models:                       # warm-up
        train_steps(name)
        eval_steps(name)
    times = {k: {"baseline": [], "dac": []} for k in ("train", "eval")}
    for r in range(args.repeats):
        order = ("baseline", "dac") if r % 2 == 0 else ("dac", "baseline")
        for kind, fn in (("train", train_steps), ("eval", eval_steps)):
            for name in order:
                times[kind][name].append(fn(name))
    result = {"threads": args.threads, "repeats": args.repeats, "steps": args.steps, "batch_size": args.batch_size,
              "model": ModelConfig(num_classes=10).to_dict(), "env": environment(), "loadavg_start": os.getloadavg(),
              "ms": times, "summary": {}}
    print(f"synthetic digits 48 px, batch {args.batch_size}, {args.threads} thread(s), {args.repeats} interleaved "
          f"repeats of {args.steps} steps (load average {os.getloadavg()[0]:.1f})")
    print(f"{'pass':<8}{'baseline ms':>13}{'DAC ms':>10}{'DAC/baseline':>14}{'ratio min-max':>16}")
    for kind in ("train", "eval"):
        ratios = [d / b for b, d in zip(times[kind]["baseline"], times[kind]["dac"], strict=True)]
        s = {"baseline_ms_median": statistics.median(times[kind]["baseline"]),
             "dac_ms_median": statistics.median(times[kind]["dac"]),
             "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
        result["summary"][kind] = s
        print(f"{kind:<8}{s['baseline_ms_median']:>13.1f}{s['dac_ms_median']:>10.1f}{s['ratio_median']:>14.2f}"
              f"{s['ratio_min']:>8.2f}-{s['ratio_max']:.2f}")
    result["loadavg_end"] = os.getloadavg()
    atomic_write_json(args.out, result)
    print(f"raw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
