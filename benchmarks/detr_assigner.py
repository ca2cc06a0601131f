"""How many one-to-many positives DAC's assigner gives per image under each rule: attnlab's default (top-k
among an object's own positives, no cap) against the official code's (``--o2m-topk-from all --o2m-cap 75``)
and the two mixed rules, on synthetic scenes of G objects and Q queries. It measures the rule, not a model:
each query's box is a random object's box moved and rescaled by Gaussian noise of ``--jitter`` x its size
(30% of the queries are random boxes instead), its class score for that object's class
``sigmoid(N(0, 1.5))``; the quality is the assigner's ``0.3 score + 0.7 IoU``. Each cell: (query, object)
pairs per image / distinct positive queries (their share of the queries); under "all" a query can serve
two objects. Raw numbers go to benchmarks/results/detr_assigner.json.

Run: python benchmarks/detr_assigner.py [--scenes 200] [--jitter 0.15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment
from attnlab.detr.matching import assignment_generators, matching_quality, one_to_many_assign, pad_targets

#: (objects, queries): a crowded 300-query scene, the same at the official 900 queries, a COCO-average image
#: (7.3 objects) at 900 queries, and the committed CPU benchmark (about 2 objects, 16 queries).
SCENES = ((20, 300), (20, 900), (7, 900), (2, 16))
RULES = {"attnlab default (own, no cap)": ("own", 0), "own, cap 75": ("own", 75),
         "all, no cap": ("all", 0), "official (all, cap 75)": ("all", 75)}


def scene(gen: torch.Generator, n_obj: int, n_queries: int, jitter: float, n_cls: int = 10):
    """One image's logits, boxes and targets (see the module docstring)."""
    size = torch.rand(n_obj, 2, generator=gen) * 0.2 + 0.05
    gt = torch.cat((torch.rand(n_obj, 2, generator=gen) * (1 - size) + size / 2, size), 1)
    owner = torch.randint(n_obj, (n_queries,), generator=gen)
    noise = torch.randn(n_queries, 4, generator=gen) * jitter
    boxes = gt[owner].clone()
    boxes[:, :2] += noise[:, :2] * boxes[:, 2:]
    boxes[:, 2:] *= noise[:, 2:].exp()
    rand = torch.rand(n_queries, generator=gen) < 0.3
    boxes[rand] = torch.cat((torch.rand(int(rand.sum()), 2, generator=gen),
                             torch.rand(int(rand.sum()), 2, generator=gen) * 0.25 + 0.02), 1)
    labels = torch.randint(n_cls, (n_obj,), generator=gen)
    logits = torch.randn(n_queries, n_cls, generator=gen) * 1.5 - 2.0
    logits[torch.arange(n_queries), labels[owner]] = torch.randn(n_queries, generator=gen) * 1.5
    return logits, boxes.clamp(0.001, 0.999), labels, gt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=200, help="scenes per (objects, queries)")
    ap.add_argument("--jitter", type=float, default=0.15, help="box noise relative to the object's size")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detr_assigner.json"))
    args = ap.parse_args()
    rows = []
    print(f"| objects | queries | {' | '.join(RULES)} |")
    print("|---|---|" + "---|" * len(RULES))
    for n_obj, n_q in SCENES:
        gen = torch.Generator().manual_seed(n_obj * 10_000 + n_q)
        counts: dict[str, list[int]] = {r: [] for r in RULES}
        distinct: dict[str, list[int]] = {r: [] for r in RULES}
        for s in range(args.scenes):
            logits, boxes, labels, gt = scene(gen, n_obj, n_q, args.jitter)
            lab, gtb, valid = pad_targets([{"labels": labels, "boxes": gt}])
            quality = matching_quality(logits[None], boxes[None], lab, gtb, valid)
            for rule, (topk_from, cap) in RULES.items():
                _, q, _ = one_to_many_assign(quality, 0.4, 6, cap, topk_from, assignment_generators((0, s), [0]))
                counts[rule].append(len(q))
                distinct[rule].append(len(set(q.tolist())))
        means = {r: statistics.mean(c) for r, c in counts.items()}
        queries = {r: statistics.mean(c) for r, c in distinct.items()}
        rows.append({"objects": n_obj, "queries": n_q, "pairs_per_image": means, "distinct_queries": queries,
                     "share_of_queries": {r: m / n_q for r, m in queries.items()}})
        cells = " | ".join(f"{means[r]:.1f} / {queries[r]:.1f} ({queries[r] / n_q:.1%})" for r in RULES)
        print(f"| {n_obj} | {n_q} | {cells} |")
    atomic_write_json(args.out, {"benchmark": "detr one-to-many positives per image", "scenes": args.scenes,
                                 "jitter": args.jitter, "rows": rows, "env": environment()})
    print(f"raw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
