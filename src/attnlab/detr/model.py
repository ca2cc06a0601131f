"""A small DETR-family detector in plain PyTorch, readable top to bottom, with DAC's C-decoder as a switch.

backbone (``backbone.py``: a stride-8 CNN, or ResNet-50 at strides 8-64; its last n levels with
``deformable_levels`` = n) -> sine positional encoding
(+ level embeddings) -> transformer encoder over all levels -> decoder with learnable anchor boxes
(DAB-style: the positional query is an MLP of the sine-embedded current box), dense or multi-scale
deformable cross-attention (``deformable.py``), iterative box refinement and per-layer heads. Each decoder
layer exposes ``self_attention`` and ``cross_attention_ffn`` so the C-decoder (DAC-DETR Sec. 3.2) can reuse
them: it shares every parameter, keeps only layer 0's
self-attention (its input is the O-decoder's query after that self-attention, as in the official code)
and runs only while training. With ``dac`` on or off the parameters and eval outputs are identical.
``look_forward_twice`` (DINO; on in the official DAC-DETR configs) lets each layer's box loss reach the
previous layer's box prediction; ``c_query_pos="o"`` gives the C-decoder the O-decoder's positional query
(the official decoder passes one ``query_pos`` to both).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deformable import DeformableAttention, token_points, valid_ratios
from .variants import BACKBONES, resolve


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int
    d_model: int = 64
    n_heads: int = 4
    enc_layers: int = 1
    dec_layers: int = 3
    ffn_dim: int = 128
    num_queries: int = 16
    backbone: str = "cnn"                  # a key of variants.BACKBONES
    backbone_channels: tuple[int, ...] = (32, 64, 96)    # cnn: channels of the stride-2 stages
    resnet_stem: int = 64                                # resnet50: sizes (ResNet-50's; smaller ones for tests)
    resnet_widths: tuple[int, ...] = (256, 512, 1024, 2048)
    resnet_depths: tuple[int, ...] = (3, 4, 6, 3)
    dropout: float = 0.0
    dac: bool = False
    c_share_first_self_attn: bool = True   # official: layer 0's self-attention output feeds the C-decoder
    deformable_levels: int = 0             # 0: dense cross-attention; n: deformable over the last n backbone stages
    deformable_points: int = 4             # sampling points per head and level
    deformable_encoder: bool = False       # encoder self-attention deformable too (Deformable DETR); needs levels
    look_forward_twice: bool = False       # layer i's boxes refine layer i-1's undetached boxes (DINO Sec. 3.5)
    c_query_pos: str = "c"                 # a key of variants.C_QUERY_POS; official "o"

    @property
    def cross_attention(self) -> str:
        """The decoder's cross-attention variant (a key of :data:`CROSS_ATTENTION`)."""
        return "deformable" if self.deformable_levels else "dense"

    def to_dict(self) -> dict:
        return {**asdict(self), **{k: list(getattr(self, k)) for k in SIZE_TUPLES}}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, **{k: tuple(d.get(k, getattr(cls, k))) for k in SIZE_TUPLES}})


#: ModelConfig fields that are tuples (lists in JSON).
SIZE_TUPLES = ("backbone_channels", "resnet_widths", "resnet_depths")


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


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


class Memory(NamedTuple):
    """The encoded image: tokens of all levels concatenated, their positional encoding and padding mask,
    each level's (H, W) and its valid ratios ``[B, levels, 2]`` (what deformable attention needs)."""

    tokens: Tensor
    pos: Tensor
    pad: Tensor
    shapes: list[tuple[int, int]]
    ratios: Tensor

    def repeat(self, n: int) -> Memory:
        return Memory(self.tokens.repeat(n, 1, 1), self.pos.repeat(n, 1, 1), self.pad.repeat(n, 1), self.shapes,
                      self.ratios.repeat(n, 1, 1))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: dense self-attention over all tokens, or with ``levels`` deformable
    self-attention, each token reading ``points`` locations per head and level around itself (Deformable
    DETR Sec. 4.1)."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float, levels: int = 0, points: int = 4):
        super().__init__()
        self.self_attn = (DeformableAttention(d, heads, levels, points) if levels
                          else nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, pad: Tensor, shapes: list[tuple[int, int]], ratios: Tensor,
                points: Tensor | None) -> Tensor:
        """``points``: each token's reference point (:func:`~attnlab.detr.deformable.token_points`), used by
        deformable self-attention only."""
        q = src + pos
        if isinstance(self.self_attn, DeformableAttention):
            attended = self.self_attn(q, points, src, shapes, pad, ratios)
        else:
            attended = self.self_attn(q, q, src, key_padding_mask=pad, need_weights=False)[0]
        src = self.norm1(src + self.dropout(attended))
        return self.norm2(src + self.dropout(self.ffn(src)))


class DenseCrossAttention(nn.MultiheadAttention):
    """DETR's cross-attention: every query attends to every image token (keys carry the positional encoding);
    the reference boxes are not used."""

    def __init__(self, d: int, heads: int, dropout: float, levels: int, points: int):
        super().__init__(d, heads, dropout=dropout, batch_first=True)

    def forward(self, query: Tensor, ref: Tensor, memory: Memory) -> Tensor:  # type: ignore[override]
        return super().forward(query, memory.tokens + memory.pos, memory.tokens, key_padding_mask=memory.pad,
                               need_weights=False)[0]


class DeformableCrossAttention(DeformableAttention):
    """Deformable DETR's cross-attention: each query reads ``points`` locations per head and level around
    its reference box (Deformable DETR Eq. 3)."""

    def __init__(self, d: int, heads: int, dropout: float, levels: int, points: int):
        super().__init__(d, heads, levels, points)

    def forward(self, query: Tensor, ref: Tensor, memory: Memory) -> Tensor:  # type: ignore[override]
        return super().forward(query, ref, memory.tokens, memory.shapes, memory.pad, memory.ratios)


#: Decoder cross-attention variants by name (``ModelConfig.cross_attention``); each is called as
#: ``attn(query, reference_boxes, memory)``.
CROSS_ATTENTION: dict[str, type[nn.Module]] = {"dense": DenseCrossAttention, "deformable": DeformableCrossAttention}


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer, split in the two calls DAC needs. Cross-attention is one of
    :data:`CROSS_ATTENTION`."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float, cross_attention: str = "dense",
                 levels: int = 0, points: int = 4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = CROSS_ATTENTION[cross_attention](d, heads, dropout, levels, points)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.dropout = nn.Dropout(dropout)

    def self_attention(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        """Queries attend to each other (the dispersing step); add & norm."""
        q = tgt + query_pos
        return self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))

    def cross_attention_ffn(self, tgt: Tensor, query_pos: Tensor, memory: Memory, ref: Tensor) -> Tensor:
        """Queries attend to the image (the gathering step), add & norm, FFN, add & norm. ``ref`` (the
        current boxes) places deformable attention's sampling points; dense attention does not use it."""
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, ref, memory)))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Memory, ref: Tensor) -> Tensor:
        return self.cross_attention_ffn(self.self_attention(tgt, query_pos), query_pos, memory, ref)


class Detector(nn.Module):
    """DETR with anchor queries and box refinement; ``forward`` returns per-layer ``logits`` ``[L, B, Q, C]``
    and ``boxes`` ``[L, B, Q, 4]`` (normalised cxcywh) of the O-decoder, plus ``c_logits``/``c_boxes`` from
    the C-decoder when ``config.dac`` and training."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.backbone = resolve(BACKBONES[c.backbone])(c, max(1, c.deformable_levels))
        if c.deformable_levels > 1:
            self.level_embed = nn.Parameter(torch.randn(c.deformable_levels, c.d_model))
        enc_levels = c.deformable_levels if c.deformable_encoder else 0
        self.encoder = nn.ModuleList(EncoderLayer(c.d_model, c.n_heads, c.ffn_dim, c.dropout, enc_levels,
                                                  c.deformable_points) for _ in range(c.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c.d_model, c.n_heads, c.ffn_dim, c.dropout, c.cross_attention,
                                                  c.deformable_levels, c.deformable_points)
                                     for _ in range(c.dec_layers))
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

    def encode(self, images: Tensor, mask: Tensor) -> Memory:
        """Backbone levels -> tokens with sine (+ level) positional encodings -> encoder over all levels."""
        levels = self.backbone(images, mask)
        tokens, pos, pad = [], [], []
        for i, (feat, level_pad) in enumerate(levels):
            level_pos = sine_position_encoding(level_pad, self.config.d_model).flatten(1, 2)
            tokens.append(feat.flatten(2).transpose(1, 2))
            pos.append(level_pos + self.level_embed[i] if self.config.deformable_levels > 1 else level_pos)
            pad.append(level_pad.flatten(1))
        memory, memory_pos, memory_pad = torch.cat(tokens, 1), torch.cat(pos, 1), torch.cat(pad, 1)
        shapes = [tuple(f.shape[-2:]) for f, _ in levels]
        ratios = torch.stack([valid_ratios(p) for _, p in levels], 1)
        points = token_points(shapes, ratios) if self.config.deformable_encoder else None
        for layer in self.encoder:
            memory = layer(memory, memory_pos, memory_pad, shapes, ratios, points)
        return Memory(memory, memory_pos, memory_pad, shapes, ratios)

    def _heads(self, i: int, tgt: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """Layer i's class logits and refined boxes: ``sigmoid(delta + inverse_sigmoid(ref))``."""
        return self.class_embed[i](tgt), (self.bbox_embed[i](tgt) + inverse_sigmoid(ref)).sigmoid()

    def forward(self, images: Tensor, mask: Tensor) -> dict[str, Tensor]:
        memory = self.encode(images, mask)
        b = images.shape[0]
        tgt = self.content_query.weight[None].expand(b, -1, -1)
        ref = self.anchor_boxes.weight.sigmoid()[None].expand(b, -1, -1)
        run_c = self.config.dac and self.training
        c_tgt, c_ref = tgt, ref
        # The boxes each layer's heads refine: the previous layer's, detached (Deformable DETR), or, looking
        # forward twice, not detached, so that layer i's box loss also trains layer i-1's box head.
        head_ref, c_head_ref = ref, ref
        both_memory = memory.repeat(2) if run_c else memory       # the O- and C-branch batches side by side
        logits, boxes, c_logits, c_boxes = [], [], [], []
        for i, layer in enumerate(self.decoder):
            query_pos = self.ref_point_head(sine_box_embedding(ref, self.config.d_model))
            o_in = layer.self_attention(tgt, query_pos)
            if not run_c:
                tgt = layer.cross_attention_ffn(o_in, query_pos, memory, ref)
            else:
                # C-decoder: no self-attention, except that layer 0's is shared (its output is the C input).
                if i == 0:
                    c_tgt = o_in if self.config.c_share_first_self_attn else tgt
                c_pos = query_pos
                if i > 0 and self.config.c_query_pos == "c":
                    c_pos = self.ref_point_head(sine_box_embedding(c_ref, self.config.d_model))
                # Both branches share the layer's weights: run their cross-attention+FFN as one batch.
                both = layer.cross_attention_ffn(torch.cat((o_in, c_tgt)), torch.cat((query_pos, c_pos)),
                                                 both_memory, torch.cat((ref, c_ref)))
                tgt, c_tgt = both[:b], both[b:]
                lg, bx = self._heads(i, c_tgt, c_head_ref)
                c_logits.append(lg)
                c_boxes.append(bx)
                c_ref = bx.detach()
                c_head_ref = bx if self.config.look_forward_twice else c_ref
            lg, bx = self._heads(i, tgt, head_ref)
            logits.append(lg)
            boxes.append(bx)
            ref = bx.detach()                                      # detached between layers (Deformable DETR)
            head_ref = bx if self.config.look_forward_twice else ref
        out = {"logits": torch.stack(logits), "boxes": torch.stack(boxes)}
        if run_c:
            out["c_logits"], out["c_boxes"] = torch.stack(c_logits), torch.stack(c_boxes)
        return out
