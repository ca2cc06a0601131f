"""Matching predictions to ground truth: Hungarian one-to-one (O-decoder) and DAC's one-to-many assigner
(C-decoder). Pure functions over tensors; targets come padded as ``labels [B, G]``, ``boxes [B, G, 4]``
(normalised cxcywh) and ``valid [B, G]``.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou


def pad_targets(targets: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image targets into ``labels [B, G]``, ``boxes [B, G, 4]`` and ``valid [B, G]`` (G = max count)."""
    g = max((len(t["labels"]) for t in targets), default=0)
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    labels = torch.zeros(len(targets), g, dtype=torch.long, device=device)
    boxes = torch.full((len(targets), g, 4), 0.5, device=device)
    valid = torch.zeros(len(targets), g, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        labels[i, :n], boxes[i, :n], valid[i, :n] = t["labels"], t["boxes"], True
    return labels, boxes, valid


def pairwise_iou(pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """IoU between every query and every object of the same image: ``[B, Q, 4] x [B, G, 4] -> [B, G, Q]``."""
    return box_iou(cxcywh_to_xyxy(gt_boxes), cxcywh_to_xyxy(pred_boxes))[0]


@torch.no_grad()
def hungarian_match(logits: Tensor, boxes: Tensor, labels: Tensor, gt_boxes: Tensor, valid: Tensor,
                    cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                    alpha: float = 0.25, gamma: float = 2.0) -> tuple[Tensor, Tensor, Tensor]:
    """One-to-one matching with Deformable-DETR's costs (focal class cost, L1, -GIoU), solved by scipy.

    Returns flat ``(batch, query, object)`` index tensors, one entry per object.
    """
    prob = logits.float().sigmoid()                                             # [B, Q, C]
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    idx = labels[:, None, :].expand(-1, prob.shape[1], -1)                      # [B, Q, G]
    c_cls = pos.gather(2, idx) - neg.gather(2, idx)
    c_l1 = torch.cdist(boxes.float(), gt_boxes.float(), p=1)
    c_giou = -generalized_box_iou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(gt_boxes.float()))
    cost = (cost_bbox * c_l1 + cost_class * c_cls + cost_giou * c_giou).cpu()
    out_b, out_q, out_g = [], [], []
    for b, n in enumerate(valid.sum(1).tolist()):
        if n == 0:
            continue
        q, g = linear_sum_assignment(cost[b, :, :n].numpy())
        out_b += [b] * len(q)
        out_q += q.tolist()
        out_g += g.tolist()
    dev = logits.device
    return (torch.tensor(out_b, dtype=torch.long, device=dev), torch.tensor(out_q, dtype=torch.long, device=dev),
            torch.tensor(out_g, dtype=torch.long, device=dev))


def matching_quality(logits: Tensor, boxes: Tensor, labels: Tensor, gt_boxes: Tensor, valid: Tensor,
                     alpha: float = 0.3) -> Tensor:
    """DAC's quality ``Q[b, g, q] = alpha * sigmoid(logit of q for g's class) + (1 - alpha) * IoU(q, g)``
    (paper Sec. 3.3; official ``onetomany.py``); padded objects get -1. Detached."""
    with torch.no_grad():
        prob = logits.float().sigmoid()                                         # [B, Q, C]
        score = prob.gather(2, labels[:, None, :].expand(-1, prob.shape[1], -1)).transpose(1, 2)  # [B, G, Q]
        q = alpha * score + (1 - alpha) * pairwise_iou(boxes.float(), gt_boxes.float())
        return q.masked_fill(~valid[:, :, None], -1.0)


def one_to_many_assign(quality: Tensor, threshold: float = 0.4, topk: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """The C-decoder's one-to-many assignment (DETA's Stage2Assigner with DAC's numbers).

    ``quality`` is ``[B, G, Q]`` (padded objects below any threshold, e.g. -1). Each query goes to its
    best object and is positive if its quality reaches ``threshold``; each object's best query is forced
    positive (detectron2's low-quality matches: it stays with *its* best object); each object then keeps
    its ``min(count, topk)`` highest-quality positives. A query serves at most one object.
    Returns flat ``(batch, query, object)`` indices.
    """
    if quality.dim() == 2:
        quality = quality[None]
    n_b, n_g, n_q = quality.shape
    empty = torch.zeros(0, dtype=torch.long, device=quality.device)
    if n_g == 0 or n_q == 0:
        return empty, empty, empty
    valid = quality.max(dim=2).values > -1.0                                     # [B, G]
    best_val, best_gt = quality.max(dim=1)                                       # [B, Q]
    positive = best_val >= threshold
    highest = quality.max(dim=2, keepdim=True).values
    positive |= ((quality == highest) & valid[:, :, None]).any(dim=1)            # forced best query per object
    mine = positive[:, None, :] & (best_gt[:, None, :] == torch.arange(n_g, device=quality.device)[None, :, None])
    vals, idx = quality.masked_fill(~mine, float("-inf")).topk(min(topk, n_q), dim=2)   # [B, G, k]
    b, g, j = torch.nonzero(vals > float("-inf"), as_tuple=True)
    return b, idx[b, g, j], g
