"""A small DETR-family detector in plain PyTorch, readable top to bottom, with DAC's C-decoder as a switch.

backbone (stride-8 CNN) -> sine positional encoding -> transformer encoder -> decoder with learnable anchor
boxes (DAB-style: the positional query is an MLP of the sine-embedded current box), iterative box
refinement and per-layer heads. Each decoder layer exposes ``self_attention`` and ``cross_attention_ffn``
so the C-decoder (DAC-DETR Sec. 3.2) can reuse them: it shares every parameter, keeps only layer 0's
self-attention (its input is the O-decoder's query after that self-attention, as in the official code)
and runs only while training. With ``dac`` on or off the parameters and eval outputs are identical.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int
    d_model: int = 64
    n_heads: int = 4
    enc_layers: int = 1
    dec_layers: int = 3
    ffn_dim: int = 128
    num_queries: int = 16
    backbone_channels: tuple[int, ...] = (32, 64, 96)
    dropout: float = 0.0
    dac: bool = False
    c_share_first_self_attn: bool = True   # official: layer 0's self-attention output feeds the C-decoder

    def to_dict(self) -> dict:
        return {**asdict(self), "backbone_channels": list(self.backbone_channels)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**{**d, "backbone_channels": tuple(d.get("backbone_channels", cls.backbone_channels))})


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class Backbone(nn.Module):
    """Stride-2 conv + GroupNorm + ReLU blocks (stride 8 with three), then a 1x1 projection to d_model."""

    def __init__(self, channels: tuple[int, ...], d_model: int):
        super().__init__()
        blocks, c_in = [], 3
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*blocks)
        self.proj = nn.Conv2d(c_in, d_model, 1)
        self.stride = 2 ** len(channels)

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.proj(self.body(images))
        mask = F.interpolate(mask[:, None].float(), size=feat.shape[-2:]).bool()[:, 0]
        return feat, mask


def sine_position_encoding(mask: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """DETR's 2-D sine encoding over the unpadded area (``mask`` True on padding): ``[B, H, W, d_model]``."""
    not_mask = (~mask).float()
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    half = d_model // 2
    dim_t = temperature ** (2 * (torch.arange(half, device=mask.device) // 2) / half)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3)


def sine_box_embedding(boxes: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """Sine embedding of normalised (cx, cy, w, h) boxes, ``d_model // 4`` features per coordinate
    (DAB-DETR's anchor encoding): ``[..., 4] -> [..., d_model]``."""
    n = d_model // 4
    dim_t = temperature ** (2 * (torch.arange(n, device=boxes.device) // 2) / n)
    pos = boxes[..., None] * 2 * math.pi / dim_t                                  # [..., 4, n]
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
    return pos.flatten(-2)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, pad: Tensor) -> Tensor:
        q = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, q, src, key_padding_mask=pad, need_weights=False)[0]))
        return self.norm2(src + self.dropout(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer, split in the two calls DAC needs."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.dropout = nn.Dropout(dropout)

    def self_attention(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        """Queries attend to each other (the dispersing step); add & norm."""
        q = tgt + query_pos
        return self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))

    def cross_attention_ffn(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                            pad: Tensor) -> Tensor:
        """Queries attend to the image (the gathering step), add & norm, FFN, add & norm."""
        attn = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, key_padding_mask=pad, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(attn))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, pad: Tensor) -> Tensor:
        return self.cross_attention_ffn(self.self_attention(tgt, query_pos), query_pos, memory, memory_pos, pad)


class Detector(nn.Module):
    """DETR with anchor queries and box refinement; ``forward`` returns per-layer ``logits`` ``[L, B, Q, C]``
    and ``boxes`` ``[L, B, Q, 4]`` (normalised cxcywh) of the O-decoder, plus ``c_logits``/``c_boxes`` from
    the C-decoder when ``config.dac`` and training."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.backbone = Backbone(c.backbone_channels, c.d_model)
        self.encoder = nn.ModuleList(EncoderLayer(c.d_model, c.n_heads, c.ffn_dim, c.dropout) for _ in range(c.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c.d_model, c.n_heads, c.ffn_dim, c.dropout) for _ in range(c.dec_layers))
        self.content_query = nn.Embedding(c.num_queries, c.d_model)
        self.anchor_boxes = nn.Embedding(c.num_queries, 4)       # learnable reference boxes, logit space
        self.ref_point_head = MLP(c.d_model, c.d_model, c.d_model, 2)
        self.class_embed = nn.ModuleList(nn.Linear(c.d_model, c.num_classes) for _ in range(c.dec_layers))
        self.bbox_embed = nn.ModuleList(MLP(c.d_model, c.d_model, 4, 3) for _ in range(c.dec_layers))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        prior_bias = -math.log((1 - 0.01) / 0.01)                 # focal prior 0.01 (RetinaNet)
        for head in self.class_embed:
            nn.init.constant_(head.bias, prior_bias)
        for head in self.bbox_embed:                              # refinement starts as the identity
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        with torch.no_grad():                                     # anchors spread over the image, 0.2 wide
            xy = torch.rand(self.config.num_queries, 2)
            self.anchor_boxes.weight.copy_(inverse_sigmoid(torch.cat((xy, torch.full_like(xy, 0.2)), 1)))

    def encode(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feat, pad = self.backbone(images, mask)
        pos = sine_position_encoding(pad, self.config.d_model).flatten(1, 2)
        memory, pad = feat.flatten(2).transpose(1, 2), pad.flatten(1)
        for layer in self.encoder:
            memory = layer(memory, pos, pad)
        return memory, pos, pad

    def _heads(self, i: int, tgt: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """Layer i's class logits and refined boxes: ``sigmoid(delta + inverse_sigmoid(ref))``."""
        return self.class_embed[i](tgt), (self.bbox_embed[i](tgt) + inverse_sigmoid(ref)).sigmoid()

    def forward(self, images: Tensor, mask: Tensor) -> dict[str, Tensor]:
        memory, mem_pos, pad = self.encode(images, mask)
        b = images.shape[0]
        tgt = self.content_query.weight[None].expand(b, -1, -1)
        ref = self.anchor_boxes.weight.sigmoid()[None].expand(b, -1, -1)
        run_c = self.config.dac and self.training
        c_tgt, c_ref = tgt, ref
        logits, boxes, c_logits, c_boxes = [], [], [], []
        for i, layer in enumerate(self.decoder):
            query_pos = self.ref_point_head(sine_box_embedding(ref, self.config.d_model))
            o_in = layer.self_attention(tgt, query_pos)
            if not run_c:
                tgt = layer.cross_attention_ffn(o_in, query_pos, memory, mem_pos, pad)
            else:
                # C-decoder: no self-attention, except that layer 0's is shared (its output is the C input).
                if i == 0:
                    c_tgt = o_in if self.config.c_share_first_self_attn else tgt
                    c_pos = query_pos
                else:
                    c_pos = self.ref_point_head(sine_box_embedding(c_ref, self.config.d_model))
                # Both branches share the layer's weights: run their cross-attention+FFN as one batch.
                both = layer.cross_attention_ffn(torch.cat((o_in, c_tgt)), torch.cat((query_pos, c_pos)),
                                                 memory.repeat(2, 1, 1), mem_pos.repeat(2, 1, 1),
                                                 pad.repeat(2, 1))
                tgt, c_tgt = both[:b], both[b:]
                lg, bx = self._heads(i, c_tgt, c_ref)
                c_logits.append(lg)
                c_boxes.append(bx)
                c_ref = bx.detach()
            lg, bx = self._heads(i, tgt, ref)
            logits.append(lg)
            boxes.append(bx)
            ref = bx.detach()                                      # detached between layers (Deformable DETR)
        out = {"logits": torch.stack(logits), "boxes": torch.stack(boxes)}
        if run_c:
            out["c_logits"], out["c_boxes"] = torch.stack(c_logits), torch.stack(c_boxes)
        return out
