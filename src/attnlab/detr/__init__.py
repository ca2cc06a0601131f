"""attnlab.detr: DETR detectors trained with DAC ("DAC-DETR: Divide the Attention Layers and Conquer",
Hu, Sun, Wang, Yang, NeurIPS 2023).

Pipeline: ``synthetic`` (COCO JSON + PNG benchmarks) and ``data`` (any COCO folder, augmentations,
padded batches) -> ``model`` (backbone, encoder, anchor-box decoder whose layers expose self-attention
and cross-attention+FFN separately; DAC's C-decoder is a switch) -> ``matching`` (Hungarian one-to-one;
one-to-many assigner) -> ``losses`` -> ``train`` (checkpoints, resume) -> ``evaluate`` (pycocotools,
queries-per-object diagnostic) -> ``predict`` and ``compare``.
"""

from __future__ import annotations

from pathlib import Path

from ..core.records import RunRecord
from .box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou, xyxy_to_cxcywh
from .data import CocoDetection, collate, make_transforms, open_split
from .evaluate import coco_ap, evaluate, queries_per_object
from .losses import LossConfig, detr_loss
from .matching import hungarian_match, matching_quality, one_to_many_assign
from .model import Detector, ModelConfig
from .synthetic import make_synthetic
from .train import TrainConfig, load_run, train

__all__ = ["CocoDetection", "Detector", "LossConfig", "ModelConfig", "TrainConfig", "box_iou", "coco_ap",
           "collate", "cxcywh_to_xyxy", "detr_loss", "evaluate", "generalized_box_iou", "hungarian_match",
           "load_run", "make_synthetic", "make_transforms", "matching_quality", "one_to_many_assign",
           "open_split", "queries_per_object", "tour", "train", "xyxy_to_cxcywh"]


def tour(out_dir: Path, seed: int = 0) -> RunRecord:
    """Small baseline-vs-DAC comparison on synthetic digits (one seed, two parallel 1-thread runs, about
    3-5 minutes on 2 cores) plus detection pictures."""
    from .tourstep import run

    return run(Path(out_dir), seed)
