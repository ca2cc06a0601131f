"""Backbones of the native detector (``ModelConfig.backbone``, a key of :data:`~attnlab.detr.variants.BACKBONES`).

Each is built as ``cls(config, levels)`` and called as ``backbone(images, mask)``; it returns
``[(features [B, d_model, H, W], padding mask [B, H, W]), ...]`` for ``levels`` feature levels, finest
first. Its ``body`` is the feature extractor (the optimizer's backbone group, Deformable DETR's
``backbone.0``); the projections to d_model beside it train at the transformer's learning rate.

* :class:`SmallCNN`: stride-2 conv + GroupNorm + ReLU blocks (strides 2/4/8 with three), CPU scale.
* :class:`ResNet`: transformers' ``ResNetBackbone`` (bottleneck; ResNet-50's 3-4-6-3 by default) with
  frozen BatchNorm (DETR Sec. A.4; ``models/backbone.py``), the stem and first stage not trained (as DETR's
  and Deformable DETR's code), features at strides 8/16/32 and, for a fourth level, a 3x3 stride-2
  convolution on the last map (stride 64; Deformable DETR Sec. 4.1 / Fig. 4).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import AttnlabError
from .variants import RESNET_LEVELS

if TYPE_CHECKING:
    from .model import ModelConfig


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (DETR's ``FrozenBatchNorm2d``): all four are
    buffers, so neither the optimizer nor train mode changes them. State-dict names are BatchNorm2d's."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), fill))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced, in place, by a :class:`FrozenBatchNorm2d` holding its
    statistics and affine parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def level_masks(maps: list[Tensor], mask: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Each feature map with the padding mask resized to it."""
    return [(m, F.interpolate(mask[:, None].float(), size=m.shape[-2:]).bool()[:, 0]) for m in maps]


class SmallCNN(nn.Module):
    """Stride-2 conv + GroupNorm + ReLU blocks (stride 8 with three), each of the last ``levels`` stages
    projected to d_model by a 1x1 convolution (finest first; the last stage's is ``proj``)."""

    def __init__(self, config: ModelConfig, levels: int = 1):
        super().__init__()
        channels, d_model = config.backbone_channels, config.d_model
        if not 1 <= levels <= len(channels):
            raise ValueError(f"levels must be between 1 and the {len(channels)} backbone stages, got {levels}")
        blocks, c_in = [], 3
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*blocks)
        self.extra_proj = nn.ModuleList(nn.Conv2d(c, d_model, 1) for c in channels[len(channels) - levels:-1])
        self.proj = nn.Conv2d(c_in, d_model, 1)
        self.strides = [2 ** (i + 1) for i in range(len(channels))][len(channels) - levels:]

    def forward(self, images: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        stages, x = [], images
        for i in range(0, len(self.body), 3):
            x = self.body[i + 2](self.body[i + 1](self.body[i](x)))
            stages.append(x)
        n = len(self.extra_proj)
        finer = zip(self.extra_proj, stages[len(stages) - 1 - n:-1], strict=True)
        return level_masks([proj(f) for proj, f in finer] + [self.proj(stages[-1])], mask)


class ResNet(nn.Module):
    """transformers' bottleneck ``ResNetBackbone`` (sizes ``resnet_stem``/``resnet_widths``/``resnet_depths``;
    random init, or :func:`load_backbone_weights`), BatchNorm frozen, stem and stage 1 not trained. ``levels``
    1-3: the last ``levels`` of the stride-8/16/32 maps, each through a 1x1 conv + GroupNorm(32); 4: those
    three plus a 3x3 stride-2 conv + GroupNorm(32) on the stride-32 map (Deformable DETR's ``input_proj``)."""

    def __init__(self, config: ModelConfig, levels: int = 1):
        super().__init__()
        from transformers import ResNetBackbone, ResNetConfig

        if not 1 <= levels <= RESNET_LEVELS:
            raise ValueError(f"levels must be between 1 and {RESNET_LEVELS} for a ResNet, got {levels}")
        widths, d = list(config.resnet_widths), config.d_model
        resnet = ResNetConfig(embedding_size=config.resnet_stem, hidden_sizes=widths,
                              depths=list(config.resnet_depths), layer_type="bottleneck",
                              out_features=["stage2", "stage3", "stage4"])
        self.body = freeze_batch_norm(ResNetBackbone(resnet))
        for p in chain(self.body.embedder.parameters(), self.body.encoder.stages[0].parameters()):
            p.requires_grad_(False)
        n_maps = min(levels, 3)
        self.input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(32, d))
                                        for c in widths[4 - n_maps:])
        self.extra = nn.ModuleList(nn.Sequential(nn.Conv2d(widths[-1], d, 3, stride=2, padding=1), nn.GroupNorm(32, d))
                                   for _ in range(levels - n_maps))
        self.strides = [8, 16, 32, 64][3 - n_maps:3 - n_maps + levels]

    def forward(self, images: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        feats = self.body(images).feature_maps                   # strides 8, 16, 32
        maps = [proj(f) for proj, f in zip(self.input_proj, feats[3 - len(self.input_proj):], strict=True)]
        maps += [conv(feats[-1]) for conv in self.extra]
        return level_masks(maps, mask)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a safetensors file into ``backbone.body``, every key checked (BatchNorm's ``num_batches_tracked``,
    meaningless when frozen, is ignored). For :class:`ResNet`: the state dict of transformers' ``ResNetModel``
    or ``ResNetBackbone`` of the same sizes, e.g. ``save_file(ResNetModel.from_pretrained(dir).state_dict(),
    FILE)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"--backbone-weights {path}: no such file (give a .safetensors state dict of the backbone)")
    try:
        weights = {k: v for k, v in load_file(str(path)).items() if not k.endswith("num_batches_tracked")}
    except (SafetensorError, OSError) as e:
        raise AttnlabError(f"--backbone-weights {path}: not a readable safetensors file ({e})") from None
    own = backbone.body.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{what} {len(keys)} key(s) (first: {keys[0]})" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape in", shapes)) if keys]
        raise AttnlabError(f"--backbone-weights {path} does not fit the backbone: {'; '.join(parts)}; save the "
                           "state dict of a backbone of the same sizes (transformers' ResNetModel for resnet50)")
    backbone.body.load_state_dict(weights)
