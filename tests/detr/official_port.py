"""A port of the official DAC-DETR one-to-many assigner (``models/onetomany.py``: ``Stage2Assigner`` with
detectron2's ``Matcher`` and ``subsample_labels`` and ``sample_topk``), written from that code for one image
at a time and without CUDA, so that tests can hold attnlab's batched assigner against it.

Read from github.com/huzhengdongcs/DAC-DETR (commit a186a20). What it does, per image:
1. quality ``C[g, q] = 0.7 IoU(box q, object g) + 0.3 p(q, class of g)`` (``get_cost_matrix``);
2. each query's best object (max over objects); labelled positive when that quality is >= 0.4, and, for
   every object, its single best query (``topk(k=1)``) is made positive too, keeping its own best object;
3. detectron2's ``subsample_labels``: ``num_pos = min(#positives, int(0.25 * batch_size_per_image))``
   positives drawn by ``randperm`` over the positives in query order (then a second ``randperm`` over the
   negatives, which only advances the generator); the official criterion builds ``Stage2Assigner(300)``;
4. ``sample_topk``: an object with ``c`` drawn positives gets the first ``c`` of its ``k = 6`` best
   queries over all queries.
"""

from __future__ import annotations

import torch


def _box_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4], both cxcywh: [N, M]."""
    def corners(x):
        return torch.stack((x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2,
                            x[:, 1] + x[:, 3] / 2), 1)

    a, b = corners(a), corners(b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def official_quality(logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor,
                     gt_boxes: torch.Tensor) -> torch.Tensor:
    """``get_cost_matrix``: [G, Q] quality of one image's Q queries for its G objects."""
    iou = _box_iou_cxcywh(boxes, gt_boxes)                          # [Q, G]
    score = logits.sigmoid()[:, gt_labels]                          # [Q, G]
    return (0.7 * iou + 0.3 * score).T


class OfficialStage2Assigner:
    """One image's one-to-many assignment as the official code computes it (see the module docstring).
    ``batch_size_per_image`` sets the cap ``int(0.25 * batch_size_per_image)``; the draws come from torch's
    global generator, as there."""

    def __init__(self, batch_size_per_image: int = 300, k: int = 6, threshold: float = 0.4,
                 positive_fraction: float = 0.25):
        self.batch_size_per_image, self.k, self.threshold = batch_size_per_image, k, threshold
        self.positive_fraction = positive_fraction

    def match(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """detectron2's ``Matcher([0.4], [0, 1], allow_low_quality_matches=True)`` with the official k=1."""
        best_val, best_gt = quality.max(dim=0)
        label = (best_val >= self.threshold).to(torch.int8)
        label[quality.topk(k=1, dim=1).indices.flatten()] = 1
        return best_gt, label

    def subsample(self, label: torch.Tensor) -> torch.Tensor:
        """``subsample_labels`` (its positives; the negatives' draw only advances the generator)."""
        positive = torch.nonzero(label == 1, as_tuple=True)[0]
        negative = torch.nonzero(label == 0, as_tuple=True)[0]
        num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
        drawn = positive[torch.randperm(positive.numel())[:num_pos]]
        torch.randperm(negative.numel())[:num_neg]
        return drawn

    def sample_topk(self, pr_inds: torch.Tensor, gt_inds: torch.Tensor,
                    quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(gt_inds) == 0:
            return pr_inds, gt_inds
        objects, counts = gt_inds.unique(return_counts=True)
        best = quality[objects].topk(self.k, dim=1).indices
        prs = [row[:c] for c, row in zip(counts.tolist(), best, strict=True)]
        gts = [torch.full((min(c, self.k),), int(o)) for c, o in zip(counts.tolist(), objects, strict=True)]
        return torch.cat(prs), torch.cat(gts)

    def __call__(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, object) pairs for one image's [G, Q] quality."""
        if quality.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        best_gt, label = self.match(quality)
        pos = self.subsample(label)
        return self.sample_topk(pos, best_gt[pos], quality)
