"""Why DAC lags at this scale: what the C-decoder does to a trained run's training batches.

For each trained run directory (its weights, its training data) this runs a few training batches through
the model with the C-decoder switched on (as in DAC training, whatever the run was trained with) and reports
medians over the batches of:

* the O-decoder's one-to-one loss (all layers), the quantity inference depends on;
* the C-decoder's positives per object and the share of all queries that are positives (last layer),
  i.e. how many queries the one-to-many assigner pulls onto each object;
* the norms of the gradients of the O-decoder loss and of the C-decoder loss and their cosine: the shared
  parameters receive g_O + g_C, so a C-gradient of comparable size that is not aligned with g_O changes
  the step the O-decoder gets.

Run: python docs/results/detr/diagnose.py RUN [RUN ...] [--batches 8] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

import torch

from attnlab.core.runtime import seed_everything, set_threads
from attnlab.detr.data import collate, make_transforms, open_split
from attnlab.detr.losses import LossConfig, detr_loss
from attnlab.detr.model import Detector
from attnlab.detr.train import load_run


def flat_grad(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.flatten() for g in grads])


def diagnose(run: str, batches: int) -> dict[str, float]:
    cfg, model, _ = load_run(run)
    dac_model = Detector(dataclasses.replace(model.config, dac=True))
    dac_model.load_state_dict(model.state_dict())
    dac_model.train()
    ds = open_split(cfg.data, cfg.train_split, make_transforms(cfg.augment, True, cfg.image_size), cfg.seed)
    loss_cfg = LossConfig(**cfg.loss)
    last = model.config.dec_layers - 1
    rows = []
    for b in range(batches):
        images, mask, targets = collate([ds[i] for i in range(b * cfg.batch_size, (b + 1) * cfg.batch_size)])
        out = dac_model(images, mask)
        o_loss, _ = detr_loss({"logits": out["logits"], "boxes": out["boxes"]}, targets, loss_cfg)
        c_only = {"logits": out["logits"][:0], "boxes": out["boxes"][:0], "c_logits": out["c_logits"],
                  "c_boxes": out["c_boxes"]}
        c_loss, parts = detr_loss(c_only, targets, loss_cfg)
        g_o, g_c = flat_grad(dac_model, o_loss), flat_grad(dac_model, c_loss)
        objects = sum(len(t["labels"]) for t in targets)
        per_object = parts[f"c{last}_positives_per_object"]
        rows.append({"o_loss": float(o_loss.detach()), "positives_per_object": per_object,
                     "positive_share_of_queries": per_object * objects / (len(targets) * model.config.num_queries),
                     "grad_norm_o": float(g_o.norm()), "grad_norm_c": float(g_c.norm()),
                     "grad_cosine": float(torch.cosine_similarity(g_o, g_c, dim=0))})
    return {"run": run, "batches": batches, "dac": bool(model.config.dac), "o2m_topk": loss_cfg.o2m_topk,
            **{k: statistics.median(r[k] for r in rows) for k in rows[0]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    set_threads(args.threads)
    seed_everything(0)
    for run in args.runs:
        r = diagnose(run, args.batches)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{run}: O-loss {r['o_loss']:.3f}; C positives/object {r['positives_per_object']:.2f} "
                  f"({r['positive_share_of_queries']:.0%} of queries); |g_O| {r['grad_norm_o']:.3f}, "
                  f"|g_C| {r['grad_norm_c']:.3f}, cos {r['grad_cosine']:.2f} (medians over {r['batches']} batches)")


if __name__ == "__main__":
    main()
