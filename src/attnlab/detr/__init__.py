"""attnlab.detr: DETR detectors trained with DAC ("DAC-DETR: Divide the Attention Layers and Conquer",
Hu, Sun, Wang, Yang, NeurIPS 2023).

Pipeline: ``synthetic`` (COCO JSON + PNG benchmarks) and ``data`` (any COCO folder, augmentations,
padded batches) -> ``model`` (a ``backbone`` from a registry, encoder, anchor-box decoder whose layers
expose self-attention and cross-attention+FFN separately; DAC's C-decoder is a switch) -> ``matching``
(Hungarian one-to-one;
one-to-many assigner) -> ``losses`` -> ``train`` (checkpoints, resume; torchrun DDP through
``distributed``) -> ``evaluate`` (pycocotools, queries-per-object diagnostic) -> ``predict`` and
``compare``; ``hf`` wraps transformers' Deformable DETR with DAC; ``variants`` holds every alternative's
name, ``tour`` the headline experiment.

The names below are imported on first use, so ``import attnlab.detr`` (which the CLI's parser does) does
not import torch. The functions named like their modules come from the module:
``from attnlab.detr.train import train``, ``from attnlab.detr.evaluate import evaluate``,
``from attnlab.detr.tour import tour``.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

_EXPORTS = {
    "backbone": ("FrozenBatchNorm2d", "ResNet", "SmallCNN", "load_backbone_weights"),
    "box_ops": ("box_iou", "cxcywh_to_xyxy", "generalized_box_iou", "xyxy_to_cxcywh"),
    "data": ("CocoDetection", "collate", "make_transforms", "open_split"),
    "evaluate": ("coco_ap", "queries_per_object"),
    "hf": ("DacDeformableDetr",),
    "losses": ("LossConfig", "detr_loss"),
    "matching": ("hungarian_match", "matching_quality", "one_to_many_assign"),
    "model": ("Detector", "ModelConfig"),
    "synthetic": ("make_synthetic",),
    "train": ("TrainConfig", "load_run"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
