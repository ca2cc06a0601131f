"""Set-prediction losses, per decoder layer: classification (sigmoid focal, or IoU-aware BCE), L1 and GIoU.
The O-decoder is Hungarian-matched and normalised by the number of objects; DAC's C-decoder is matched
one-to-many and normalised by 3x the number of objects (official ``balance_num = 3``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_ops import cxcywh_to_xyxy, paired_giou, paired_iou
from .matching import assignment_generators, hungarian_match, matching_quality, one_to_many_assign, pad_targets
from .variants import CLS_LOSSES, resolve


@dataclass(frozen=True)
class LossConfig:
    """Weights and DAC options. ``o2m_box_source`` "c" scores C-decoder queries with their own boxes;
    "o" uses the O-decoder's boxes of the same layer, as the official code does (its issue #8).
    ``o2m_cap`` (0 = none; official 75) caps an image's one-to-many positives, drawn at random;
    ``o2m_topk_from`` is a key of :data:`~attnlab.detr.variants.O2M_TOPK_FROM` (official "all")."""

    cls_weight: float = 1.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    cls_loss: str = "focal"            # a key of variants.CLS_LOSSES
    focal_alpha: float = 0.25
    o2m_alpha: float = 0.3             # quality = 0.3 * score + 0.7 * IoU
    o2m_threshold: float = 0.4
    o2m_topk: int = 6
    o2m_box_source: str = "c"
    o2m_cap: int = 0
    o2m_topk_from: str = "own"
    c_loss_norm: float = 3.0           # C-decoder loss divided by c_loss_norm x objects
    rank_tau: float = 1.5              # IA-BCE rank weights exp(-rank / tau) in the C-decoder


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise focal loss (Lin et al. 2017) on sigmoid logits with 0/1 targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * ce * (1 - p_t) ** gamma


def ia_bce_loss(logits: Tensor, soft_targets: Tensor, positive: Tensor, gamma: float = 2.0) -> Tensor:
    """Elementwise IoU-aware BCE (Align-DETR): positives ``-t log p - (1-t) log(1-p)`` with soft target t,
    negatives ``-p^gamma log(1-p)``. As in the official ``IA_BCE_loss`` (and the focal loss's modulating
    factor) p^gamma is part of the loss, not a constant weight: its gradient flows."""
    p = logits.sigmoid()
    pos_w = torch.where(positive, soft_targets, torch.zeros_like(p))
    neg_w = torch.where(positive, 1 - soft_targets, p ** gamma)
    return -pos_w * F.logsigmoid(logits) - neg_w * F.logsigmoid(-logits)


def rank_within_groups(groups: Tensor, scores: Tensor) -> Tensor:
    """Rank (0 = best) of each score among the entries with the same group id."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    sorted_groups = groups[order]
    pos = torch.arange(len(groups), device=groups.device)
    first = torch.zeros_like(pos)
    if len(groups):
        starts = torch.ones_like(sorted_groups, dtype=torch.bool)
        starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
        first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
    ranks = torch.empty_like(pos)
    ranks[order] = pos - first
    return ranks


def focal_classification(logits: Tensor, b: Tensor, q: Tensor, labels: Tensor, iou: Tensor, groups: Tensor | None,
                         cfg: LossConfig) -> tuple[Tensor, Tensor]:
    """Sigmoid focal loss against 0/1 targets (matched class = 1); every match weighs 1 in the box losses."""
    target = torch.zeros_like(logits, dtype=torch.float32)
    target[b, q, labels] = 1.0
    return sigmoid_focal_loss(logits.float(), target, cfg.focal_alpha), torch.ones(len(b), device=logits.device)


def ia_bce_classification(logits: Tensor, b: Tensor, q: Tensor, labels: Tensor, iou: Tensor, groups: Tensor | None,
                          cfg: LossConfig) -> tuple[Tensor, Tensor]:
    """IoU-aware BCE with soft target ``t = p^0.25 IoU^0.75`` (Align-DETR). With ``groups`` (one id per
    object; the one-to-many C-decoder) each object's positives are weighted ``exp(-rank / tau)``, in t and
    in the box losses."""
    with torch.no_grad():
        p = logits.detach().float()[b, q, labels].sigmoid()
        t = (p ** 0.25 * iou ** 0.75).clamp(min=0.01)
        weight = torch.ones(len(b), device=logits.device)
        if groups is not None:
            weight = torch.exp(-rank_within_groups(groups, t).float() / cfg.rank_tau)
            t = t * weight
    target = torch.zeros_like(logits, dtype=torch.float32)
    positive = torch.zeros_like(target, dtype=torch.bool)
    positive[b, q, labels] = True
    target[b, q, labels] = t
    return ia_bce_loss(logits.float(), target, positive), weight


def layer_loss(logits: Tensor, boxes: Tensor, labels: Tensor, gt_boxes: Tensor,
               match: tuple[Tensor, Tensor, Tensor], normaliser: float, cfg: LossConfig,
               rank_weighting: bool = False) -> dict[str, Tensor]:
    """Classification (``cfg.cls_loss``, one of :data:`~attnlab.detr.variants.CLS_LOSSES`), L1 and GIoU
    losses of one layer for matched ``(batch, query, object)`` triples."""
    b, q, g = match
    pred, gt = boxes[b, q].float(), gt_boxes[b, g].float()
    with torch.no_grad():
        iou = paired_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt))
    groups = b * gt_boxes.shape[1] + g if rank_weighting else None
    cls, weight = resolve(CLS_LOSSES[cfg.cls_loss])(logits, b, q, labels[b, g], iou, groups, cfg)
    l1 = (F.l1_loss(pred, gt, reduction="none").sum(-1) * weight).sum()
    giou = ((1 - paired_giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gt))) * weight).sum()
    return {"cls": cls.sum() / normaliser, "l1": l1 / normaliser, "giou": giou / normaliser}


def detr_loss(outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], cfg: LossConfig,
              num_objects: float | None = None, sample_key: tuple[int, ...] = (0,)) -> tuple[Tensor, dict[str, float]]:
    """Total training loss over every layer of the O-decoder (one-to-one) and, when present, the
    C-decoder (one-to-many). ``outputs`` holds ``[L, B, Q, ...]`` tensors ``logits``/``boxes`` and optionally
    ``c_logits``/``c_boxes``. ``num_objects`` normalises both decoders' losses (default: the batch's object
    count, at least 1; a distributed run passes the all-reduced count over the world size, so that the
    averaged gradient is the one-process gradient). ``sample_key`` (seed, step) seeds the positive cap's
    draws, with each layer and image id (:func:`~attnlab.detr.matching.assignment_generators`). Returns
    the loss and its parts (floats) for logging."""
    labels, gt_boxes, valid = pad_targets(targets)
    n_obj = max(float(valid.sum()), 1.0) if num_objects is None else num_objects
    w = {"cls": cfg.cls_weight, "l1": cfg.l1_weight, "giou": cfg.giou_weight}
    total = outputs["logits"].new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    for i, (lg, bx) in enumerate(zip(outputs["logits"], outputs["boxes"], strict=True)):
        match = hungarian_match(lg, bx, labels, gt_boxes, valid)
        for k, v in layer_loss(lg, bx, labels, gt_boxes, match, n_obj, cfg).items():
            total = total + w[k] * v
            parts[f"o{i}_{k}"] = float(v.detach())
    if "c_logits" in outputs:
        for i, (lg, bx) in enumerate(zip(outputs["c_logits"], outputs["c_boxes"], strict=True)):
            score_boxes = bx if cfg.o2m_box_source == "c" else outputs["boxes"][i]
            quality = matching_quality(lg, score_boxes, labels, gt_boxes, valid, cfg.o2m_alpha)
            generators = None
            if cfg.o2m_cap:
                ids = [int(t["image_id"]) if "image_id" in t else j for j, t in enumerate(targets)]
                generators = assignment_generators((*sample_key, i), ids)
            match = one_to_many_assign(quality, cfg.o2m_threshold, cfg.o2m_topk, cfg.o2m_cap, cfg.o2m_topk_from,
                                       generators)
            parts[f"c{i}_positives_per_object"] = len(match[0]) / n_obj
            loss = layer_loss(lg, bx, labels, gt_boxes, match, cfg.c_loss_norm * n_obj, cfg, rank_weighting=True)
            for k, v in loss.items():
                total = total + w[k] * v
                parts[f"c{i}_{k}"] = float(v.detach())
    if not math.isfinite(float(total.detach())):
        raise FloatingPointError(f"non-finite loss {float(total.detach())}")
    return total, parts
