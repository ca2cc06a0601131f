"""What DAC costs per training step on transformers' Deformable DETR (attnlab.detr.hf): seconds per
optimizer step (forward, attnlab's loss, backward, AdamW) of the same randomly initialised model wrapped
with ``dac=False`` (baseline: the O-decoder's loss only) and ``dac=True`` (plus the C-pass and its
one-to-many loss), interleaved step by step so that a change in the machine's load hits both alike, after
warm-up steps. Reports the median of each and their ratio. Random images and 1-4 random boxes per image;
the numbers are about cost, not accuracy. Raw numbers go to benchmarks/results/detr_hf.json.

Run: python benchmarks/detr_hf.py [--size small|base] [--steps 20] [--threads 1] [--device cpu|cuda]
(on CUDA each step is timed to its end: torch.cuda.synchronize before the clock stops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import choose_device, environment
from attnlab.detr.hf import HfDetector, tiny_config

#: Model options (attnlab's names, :func:`attnlab.detr.hf.tiny_config`), image side and batch size.
SIZES = {"small": ({"d_model": 64, "num_queries": 16, "dec_layers": 3, "enc_layers": 1, "ffn_dim": 128}, 64, 4),
         "base": ({"d_model": 256, "n_heads": 8, "num_queries": 300, "dec_layers": 6, "enc_layers": 6,
                   "ffn_dim": 1024, "backbone_channels": (128, 256, 512)}, 320, 2)}


def batch(gen: torch.Generator, n: int, side: int):
    images = torch.randn(n, 3, side, side, generator=gen)
    targets = []
    for _ in range(n):
        k = int(torch.randint(1, 5, (1,), generator=gen))
        wh = torch.rand(k, 2, generator=gen) * 0.3 + 0.05
        xy = torch.rand(k, 2, generator=gen) * (1 - wh) + wh / 2
        targets.append({"labels": torch.randint(10, (k,), generator=gen), "boxes": torch.cat((xy, wh), 1)})
    return images, torch.zeros(n, side, side, dtype=torch.bool), targets


def to(device: str, images, mask, targets):
    return images.to(device), mask.to(device), [{k: v.to(device) for k, v in t.items()} for t in targets]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 3 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--two-stage", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detr_hf.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    options, side, n = SIZES[args.size]
    torch.manual_seed(0)
    from transformers import DeformableDetrForObjectDetection

    device = choose_device(args.device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base = DeformableDetrForObjectDetection(tiny_config(10, options, args.two_stage)).to(device)
    models = {"baseline": HfDetector(base, dac=False).train(), "dac": HfDetector(base, dac=True).train()}
    opt = torch.optim.AdamW(base.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    data = [to(device, *batch(gen, n, side)) for _ in range(4)]
    times: dict[str, list[float]] = {k: [] for k in models}
    for step in range(3 + args.steps):
        for name, model in models.items():
            images, mask, targets = data[step % len(data)]
            sync()
            t0 = time.perf_counter()
            loss, _ = model.loss(model(images, mask), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            if step >= 3:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["dac"] / med["baseline"]
    params = sum(p.numel() for p in base.parameters())
    print(f"size {args.size} ({params} parameters, {side} px, batch {n}, two-stage {args.two_stage}, {device}, "
          f"{args.threads} thread(s)): baseline {med['baseline']:.3f} s/step, DAC {med['dac']:.3f} s/step, "
          f"ratio {ratio:.2f}")
    out = Path(args.out)
    rows = {}
    if out.is_file():
        rows = json.loads(out.read_text())["runs"]
    on = "" if device == "cpu" else f"-{device}"
    rows[f"{args.size}{'-two-stage' if args.two_stage else ''}{on}-t{args.threads}"] = {
        "device": device, "options": options, "image_side": side, "batch": n, "parameters": params,
        "steps": args.steps,
        "seconds_per_step": {k: [round(x, 5) for x in v] for k, v in times.items()},
        "median": {k: round(v, 5) for k, v in med.items()}, "ratio": round(ratio, 3)}
    atomic_write_json(out, {"runs": rows, "env": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
