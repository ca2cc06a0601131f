"""COCO evaluation with pycocotools (AP, AP50, AP75, APs/m/l) and the paper's queries-per-object diagnostic."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .box_ops import cxcywh_to_xyxy
from .data import CocoDetection, collate
from .matching import matching_quality, pad_targets
from .model import Detector

AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
QUALITY_THRESHOLDS = (0.6, 0.7, 0.8)


def postprocess(logits: Tensor, boxes: Tensor, orig_sizes: Tensor, top_k: int = 100) -> list[dict[str, Tensor]]:
    """Deformable-DETR's plain top-k over all (query, class) scores, no NMS; boxes in original-image xyxy pixels."""
    prob = logits.float().sigmoid().flatten(1)                                    # [B, Q*C]
    scores, idx = prob.topk(min(top_k, prob.shape[1]), dim=1)
    n_cls = logits.shape[2]
    q, labels = idx // n_cls, idx % n_cls
    xyxy = cxcywh_to_xyxy(boxes.float()).gather(1, q[..., None].expand(-1, -1, 4))
    h, w = orig_sizes.unbind(1)
    xyxy = xyxy * torch.stack((w, h, w, h), 1)[:, None, :].float()
    return [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, xyxy, strict=True)]


def coco_detections(preds: list[dict[str, Tensor]], image_ids: list[int], cat_ids: list[int]) -> list[dict[str, Any]]:
    out = []
    for p, image_id in zip(preds, image_ids, strict=True):
        for s, label, (x0, y0, x1, y1) in zip(p["scores"].tolist(), p["labels"].tolist(), p["boxes"].tolist(),
                                              strict=True):
            out.append({"image_id": image_id, "category_id": cat_ids[label], "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": s})
    return out


def write_predictions(path: str | Path, detections: list[dict[str, Any]], overwrite: bool = False) -> Path:
    """``detections`` as a COCO results file (a JSON list of ``{image_id, category_id, bbox: [x, y, w, h],
    score}`` with the annotation file's ids), the input of ``COCO.loadRes``; floats at full precision, so
    that COCOeval on the file gives the AP that was reported. Written atomically; an existing file is kept
    unless ``overwrite``."""
    from ..core.atomic import atomic_write_text
    from ..core.outputs import output_file

    return atomic_write_text(output_file(path, overwrite), json.dumps(detections))


def coco_ap(coco_gt, detections: list[dict[str, Any]]) -> dict[str, float | None]:
    """COCOeval bbox metrics; a size bucket without objects is None (COCOeval's -1)."""
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {k: 0.0 for k in AP_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])   # loadRes adds area, id, ... in place
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (None if v < 0 else round(float(v), 4)) for k, v in zip(AP_NAMES, ev.stats[:6], strict=True)}


def queries_per_object(logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]],
                       thresholds: tuple[float, ...] = QUALITY_THRESHOLDS,
                       alpha: float = 0.3) -> tuple[np.ndarray, int]:
    """For each object, the number of queries whose quality (0.3 score + 0.7 IoU, as in the assigner)
    exceeds each threshold (the paper's gathering diagnostic). Returns summed counts and the object count."""
    labels, gt_boxes, valid = pad_targets(targets)
    q = matching_quality(logits, boxes, labels, gt_boxes, valid, alpha)          # [B, G, Q]
    counts = np.array([float((q > t).sum(2)[valid].sum()) for t in thresholds])
    return counts, int(valid.sum())


@torch.no_grad()
def branch_queries_per_object(model: Detector, dataset: CocoDetection,
                              thresholds: tuple[float, ...] = QUALITY_THRESHOLDS, batch_size: int = 64,
                              device: str = "cpu") -> dict[str, list[float]]:
    """Queries per object above each quality threshold for the O-decoder and, on the same weights, the
    C-decoder (no self-attention after layer 0): the paper's observation (Sec. 3.1, Fig. 1) that
    cross-attention gathers queries onto objects and self-attention disperses them. Any trained model works."""
    both = Detector(replace(model.config, dac=True)).to(device)
    both.load_state_dict(model.state_dict())
    both.train()                                        # the C-decoder runs in training mode only; no dropout here
    counts = {"o": np.zeros(len(thresholds)), "c": np.zeros(len(thresholds))}
    n_obj = 0
    for start in range(0, len(dataset), batch_size):
        images, mask, targets = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        out = both(images.to(device), mask.to(device))
        for branch, prefix in (("o", ""), ("c", "c_")):
            c, n = queries_per_object(out[f"{prefix}logits"][-1].cpu(), out[f"{prefix}boxes"][-1].cpu(), targets,
                                      thresholds)
            counts[branch] += c
        n_obj += n
    return {branch: [round(float(c / max(n_obj, 1)), 4) for c in total] for branch, total in counts.items()}


class Predictions(NamedTuple):
    """What :func:`predict_images` found on some images: their COCO detections and, per quality
    threshold, the summed queries-per-object counts over their ``objects`` objects (picklable, so that
    processes of a distributed run can gather them)."""

    detections: list[dict[str, Any]]
    counts: list[float]
    objects: int


@torch.no_grad()
def predict_images(model: torch.nn.Module, dataset: CocoDetection, indices: Sequence[int], batch_size: int = 64,
                   device: str = "cpu", top_k: int = 100) -> Predictions:
    """The O-decoder's last-layer detections and queries-per-object counts on ``dataset[i]`` for ``i`` in
    ``indices`` (an empty ``indices`` gives empty predictions, no empty batch)."""
    was_training = model.training
    model.eval()
    detections: list[dict[str, Any]] = []
    counts, n_obj = np.zeros(len(QUALITY_THRESHOLDS)), 0
    for start in range(0, len(indices), batch_size):
        images, mask, targets = collate([dataset[i] for i in indices[start:start + batch_size]])
        out = model(images.to(device), mask.to(device))
        logits, boxes = out["logits"][-1].cpu(), out["boxes"][-1].cpu()
        preds = postprocess(logits, boxes, torch.stack([t["orig_size"] for t in targets]), top_k)
        detections += coco_detections(preds, [int(t["image_id"]) for t in targets], dataset.cat_ids)
        c, n = queries_per_object(logits, boxes, targets)
        counts, n_obj = counts + c, n_obj + n
    model.train(was_training)
    return Predictions(detections, counts.tolist(), n_obj)


def coco_metrics(dataset: CocoDetection, parts: list[Predictions]) -> dict[str, Any]:
    """AP metrics and ``queries_per_object@t`` of predictions on disjoint parts of ``dataset``."""
    metrics: dict[str, Any] = coco_ap(dataset.coco, [d for p in parts for d in p.detections])
    n_obj = sum(p.objects for p in parts)
    for i, t in enumerate(QUALITY_THRESHOLDS):
        metrics[f"queries_per_object@{t}"] = round(sum(p.counts[i] for p in parts) / max(n_obj, 1), 4)
    return metrics


def evaluate(model: torch.nn.Module, dataset: CocoDetection, batch_size: int = 64, device: str = "cpu",
             top_k: int = 100) -> dict[str, Any]:
    """AP metrics on ``dataset`` plus ``queries_per_object@t`` of the O-decoder's last layer."""
    return coco_metrics(dataset, [predict_images(model, dataset, range(len(dataset)), batch_size, device, top_k)])
