"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021, Eq. 3) in pure PyTorch.

Each query attends to ``points`` sampled locations per head and per feature level instead of every
position: the locations are the query's reference box centre plus learned offsets scaled by the box size
(the box-refinement form, Deformable DETR App. A.4; the decoder's), or a reference point plus offsets in
pixels of each level (Eq. 3 as written; the encoder's, where every token's reference is itself); the values
are read by bilinear interpolation (``F.grid_sample``), and the per-head weights are a softmax over all
levels x points. No CUDA op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def token_points(shapes: list[tuple[int, int]], ratios: Tensor) -> Tensor:
    """Each token's own centre as a reference point, normalised by its level's unpadded size: ``[B, S, 2]``
    (x, y) over the levels' tokens concatenated (Deformable DETR's encoder ``get_reference_points``)."""
    points = []
    for level, (h, w) in enumerate(shapes):
        y, x = torch.meshgrid(torch.arange(h, device=ratios.device) + 0.5, torch.arange(w, device=ratios.device) + 0.5,
                              indexing="ij")
        points.append(torch.stack((x.reshape(-1)[None] / (ratios[:, None, level, 0] * w),
                                   y.reshape(-1)[None] / (ratios[:, None, level, 1] * h)), -1))
    return torch.cat(points, 1)


def valid_ratios(pad: Tensor) -> Tensor:
    """The unpadded share of each level's width and height: ``pad [B, H, W]`` (True on padding) -> ``[B, 2]``
    as (w, h), so a box normalised to the image maps to ``box * ratio`` in the padded feature map."""
    h = (~pad[:, :, 0]).sum(1).float() / pad.shape[1]
    w = (~pad[:, 0, :]).sum(1).float() / pad.shape[2]
    return torch.stack((w, h), 1)


class DeformableAttention(nn.Module):
    """``forward(query [B, Q, d], boxes [B, Q, 4] (normalised cxcywh) or points [B, Q, 2] (normalised xy),
    value [B, S, d], shapes [(H, W), ...], pad [B, S], ratios [B, levels, 2]) -> [B, Q, d]``; ``value`` is the
    levels' tokens concatenated."""

    def __init__(self, d_model: int, heads: int, levels: int, points: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(d_model, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d_model, heads * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """As Deformable DETR: offsets start on a ring of ``heads`` directions, k-th point k steps out."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        grid = torch.stack((angle.cos(), angle.sin()), -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid[:, None, None, :].repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, boxes: Tensor, value: Tensor, shapes: list[tuple[int, int]], pad: Tensor,
                ratios: Tensor) -> Tensor:
        b, q, d = query.shape
        h, lv, p = self.heads, self.levels, self.points
        v = self.value_proj(value).masked_fill(pad[..., None], 0.0).view(b, -1, h, d // h)
        offsets = self.sampling_offsets(query).view(b, q, h, lv, p, 2)
        weights = self.attention_weights(query).view(b, q, h, lv * p).softmax(-1).view(b, q, h, lv, p)
        centre = boxes[:, :, None, :2] * ratios[:, None]                                  # [B, Q, levels, 2]
        if boxes.shape[-1] == 4:
            size = boxes[:, :, None, 2:] * ratios[:, None]
            loc = centre[:, :, None, :, None] + offsets / p * size[:, :, None, :, None] * 0.5  # [B, Q, h, lv, p, 2]
        else:
            pixels = torch.tensor([(w, hh) for hh, w in shapes], dtype=offsets.dtype, device=offsets.device)
            loc = centre[:, :, None, :, None] + offsets / pixels[:, None, :]
        out = query.new_zeros(b * h, d // h, q, p)
        start = 0
        for level, (hh, ww) in enumerate(shapes):
            v_l = v[:, start:start + hh * ww].permute(0, 2, 3, 1).reshape(b * h, d // h, hh, ww)
            start += hh * ww
            grid = (2 * loc[:, :, :, level] - 1).transpose(1, 2).reshape(b * h, q, p, 2)
            sampled = F.grid_sample(v_l, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = out + sampled * weights[:, :, :, level].transpose(1, 2).reshape(b * h, 1, q, p)
        out = out.sum(-1).view(b, h, d // h, q).permute(0, 3, 1, 2).reshape(b, q, d)
        return self.output_proj(out)
