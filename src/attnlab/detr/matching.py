"""Matching predictions to ground truth: Hungarian one-to-one (O-decoder) and DAC's one-to-many assigner
(C-decoder). Pure functions over tensors; targets come padded as ``labels [B, G]``, ``boxes [B, G, 4]``
(normalised cxcywh) and ``valid [B, G]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou
from .variants import O2M_TOPK_FROM


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


def one_to_many_assign(quality: Tensor, threshold: float = 0.4, topk: int = 6, cap: int = 0, topk_from: str = "own",
                       generators: Sequence[torch.Generator] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The C-decoder's one-to-many assignment (DETA's Stage2Assigner with DAC's numbers).

    ``quality`` is ``[B, G, Q]`` (padded objects below any threshold, e.g. -1). Each query goes to its
    best object and is positive if its quality reaches ``threshold``; each object's best query (the first
    on a tie) is forced positive (detectron2's low-quality matches: it stays with *its* best object). With
    ``cap`` > 0 an image with more positives keeps ``cap`` of them drawn at random (detectron2's
    ``subsample_labels``: a ``randperm`` over the positives in query order, from ``generators[b]``, or
    torch's global generator when None, as the official code). An object with ``n`` positives then gets
    ``min(n, topk)`` queries: its best positives (``topk_from="own"``: a query serves one object), or
    its best queries of all (``"all"``: the official ``sample_topk``; a query may serve two objects).
    Returns flat ``(batch, query, object)`` indices.
    """
    if topk_from not in O2M_TOPK_FROM:
        raise ValueError(f"topk_from must be one of {', '.join(O2M_TOPK_FROM)}, got {topk_from!r}")
    if quality.dim() == 2:
        quality = quality[None]
    n_b, n_g, n_q = quality.shape
    empty = torch.zeros(0, dtype=torch.long, device=quality.device)
    if n_g == 0 or n_q == 0:
        return empty, empty, empty
    valid = quality.max(dim=2).values > -1.0                                     # [B, G]
    best_val, best_gt = quality.max(dim=1)                                       # [B, Q]
    positive = best_val >= threshold
    fb, fg = torch.nonzero(valid, as_tuple=True)
    positive[fb, quality.argmax(dim=2)[fb, fg]] = True                            # forced best query per object
    if cap > 0:
        positive = _subsample(positive, cap, generators)
    mine = positive[:, None, :] & (best_gt[:, None, :] == torch.arange(n_g, device=quality.device)[None, :, None])
    k = min(topk, n_q)
    if topk_from == "own":
        vals, idx = quality.masked_fill(~mine, float("-inf")).topk(k, dim=2)     # [B, G, k]
        b, g, j = torch.nonzero(vals > float("-inf"), as_tuple=True)
    else:
        idx = quality.topk(k, dim=2).indices
        keep = torch.arange(k, device=quality.device)[None, None, :] < mine.sum(2, keepdim=True)
        b, g, j = torch.nonzero(keep, as_tuple=True)
    return b, idx[b, g, j], g


def _subsample(positive: Tensor, cap: int, generators: Sequence[torch.Generator] | None) -> Tensor:
    """At most ``cap`` positives per image, drawn as detectron2's ``subsample_labels`` draws them."""
    out = torch.zeros_like(positive)
    for b in range(positive.shape[0]):
        (pos,) = torch.nonzero(positive[b], as_tuple=True)
        perm = torch.randperm(len(pos), generator=None if generators is None else generators[b])
        out[b, pos[perm[:cap].to(pos.device)]] = True
    return out


def assignment_generators(key: Sequence[int], image_ids: Sequence[int]) -> list[torch.Generator]:
    """One generator per image for the positive cap, seeded by ``key`` (seed, step, layer) and the image's
    id: the draw depends on the image, not on its place in the batch or on the process that holds it."""
    seeds = [np.random.SeedSequence([*key, int(i) % 2**63]).generate_state(1, np.uint64)[0] for i in image_ids]
    return [torch.Generator().manual_seed(int(s) % 2**63) for s in seeds]
