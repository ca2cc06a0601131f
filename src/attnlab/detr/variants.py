"""The alternatives of ``attnlab.detr``, each defined once. This module imports nothing heavy: the CLI's
``choices=`` and the tests' parametrize read these dicts without importing torch.

Implementations are named as ``"module:attribute"`` strings and imported on first use (:func:`resolve`).
"""

from __future__ import annotations

import importlib
from typing import Any

#: The two trainings `compare` and the tour put side by side, as model options: DAC is a training-time
#: switch on the same detector (paper Sec. 3.2: the C-decoder shares every parameter of the O-decoder).
VARIANTS: dict[str, dict[str, Any]] = {"baseline": {"dac": False}, "dac": {"dac": True}}

#: Detector architectures `train --arch` builds (DAC is a switch on each).
ARCHS: dict[str, str] = {"native": "attnlab's readable DETR (attnlab.detr.model)",
                         "hf-deformable": "transformers' DeformableDetrForObjectDetection with box refinement "
                                          "(attnlab.detr.hf; --from-pretrained DIR, --two-stage)"}

#: Backbones of the native detector (``--backbone``), each built as ``cls(model_config, levels)``.
BACKBONES: dict[str, str] = {"cnn": "attnlab.detr.backbone:SmallCNN", "resnet50": "attnlab.detr.backbone:ResNet"}

#: What each backbone means, for --help.
BACKBONE_TEXT: dict[str, str] = {
    "cnn": "three stride-2 conv + GroupNorm blocks, strides 2/4/8 (CPU scale)",
    "resnet50": "transformers' bottleneck ResNetBackbone, 3-4-6-3 (--resnet-* resize it), frozen BatchNorm, "
                "strides 8/16/32 plus a stride-64 conv"}

#: The backbone's lr multiplier (and the sampling offsets') when none is given: a ResNet trains as in
#: Deformable DETR (backbone x0.1, sampling offsets / reference points x0.1); the small CNN as it always
#: did, with one lr (its documented results and the run folders saved before the groups existed).
LR_MULT_DEFAULTS: dict[str, float] = {"cnn": 1.0, "resnet50": 0.1}


#: Levels a ResNet backbone gives: its stages at strides 8/16/32, then the stride-64 convolution.
RESNET_LEVELS = 4


def backbone_levels(model: dict[str, Any]) -> int:
    """The most feature levels the backbone of ``model`` options gives."""
    if model.get("backbone", "cnn") == "resnet50":
        return RESNET_LEVELS
    return len(model.get("backbone_channels", (32, 64, 96)))


#: Model options the hf-deformable architecture cannot honour, with the value it has (refused otherwise).
HF_FIXED_OPTIONS: dict[str, Any] = {"look_forward_twice": False, "c_share_first_self_attn": True}



def hf_size_problem(model: dict[str, Any]) -> str | None:
    """Why ``model`` options cannot size a fresh hf-deformable detector (None when they can): its input
    projections' GroupNorm(32) needs d_model a multiple of 32; its ResNet has 3 stages to project."""
    d, stages = model.get("d_model", 64), len(model.get("backbone_channels", (32, 64, 96)))
    if d % 32 or stages != 3:
        return (f"--arch hf-deformable needs d_model a multiple of 32 (got {d}) and 3 backbone stages "
                f"(got {stages})")
    return None


#: Classification losses: sigmoid focal loss (Deformable DETR), or IoU-aware BCE with rank weights in the
#: C-decoder (Align-DETR), the variant of DAC's released code. Each returns (elementwise loss, match weights).
CLS_LOSSES: dict[str, str] = {"focal": "attnlab.detr.losses:focal_classification",
                              "ia_bce": "attnlab.detr.losses:ia_bce_classification"}

#: Boxes the one-to-many assigner scores the C-decoder's queries with (paper Sec. 3.3 leaves it open).
O2M_BOX_SOURCES: dict[str, str] = {"c": "the C-decoder's own boxes",
                                   "o": "the O-decoder's boxes of the same layer (official code, its issue #8)"}

#: Where the one-to-many assigner picks an object's queries (official ``onetomany.py``: ``sample_topk``).
O2M_TOPK_FROM: dict[str, str] = {"own": "its best queries among its own positives (a query serves one object)",
                                 "all": "its best queries of all, as many as it has positives (official)"}

#: The positional query of the C-decoder's layers (the paper does not say; the official decoder passes one).
C_QUERY_POS: dict[str, str] = {"c": "from the C-decoder's own current boxes",
                               "o": "the O-decoder's positional query of the same layer (official)"}

#: What `--official-dac` sets: the released DAC-DETR code's choices, as model and loss options. The cap is
#: the official number (its criterion builds Stage2Assigner(300): int(0.25 x 300) = 75 positives per image,
#: whatever the number of queries).
OFFICIAL_DAC: dict[str, dict[str, Any]] = {
    "model": {"dac": True, "look_forward_twice": True, "c_query_pos": "o"},
    "loss": {"cls_loss": "ia_bce", "o2m_box_source": "o", "o2m_topk_from": "all", "o2m_cap": 75},
}

#: Training augmentations (DETR's recipe, scaled from COCO's 800 px to --image-size).
AUGMENTATIONS: dict[str, str] = {"none": "resize only",
                                 "scale": "multi-scale resize, or resize-crop-resize",
                                 "detr": "scale plus horizontal flip (DETR's full recipe)"}

#: Synthetic COCO benchmarks `make-data` writes.
DATASETS: dict[str, str] = {"synthetic-digits": "scikit-learn's 8x8 digits, 10 classes",
                            "synthetic-shapes": "procedural rectangles, ellipses and triangles, 3 classes"}


def resolve(spec: str) -> Any:
    """The object a ``"module:attribute"`` registry entry names."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def describe(registry: dict[str, str]) -> str:
    """``name: description; ...`` for a --help text."""
    return "; ".join(f"{k}: {v}" for k, v in registry.items())
