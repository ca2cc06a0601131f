"""Swap attention for the fitted affine map (``nbl``) or for nothing (``drop``, Attention Drop).

A replaced layer computes h + W h + b (pre-norm families; BERT: LayerNorm(h + W h + b)). It never touches
the KV cache, so a cached generation stores nothing for it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.errors import AttnlabError
from ..core.hf import decoder_layers, replace_attention
from .lmmse import AffineMap
from .registry import METHODS


class LinearAttention(nn.Module):
    """Token-wise affine stand-in for self-attention: returns (W x + b, None) like an attention module.
    The map is held (and runs) in ``weight``'s dtype on ``weight``'s device."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=True, device=weight.device,
                                dtype=weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return self.linear(hidden_states), None


class DroppedAttention(nn.Module):
    """Attention Drop (He et al.): the sub-layer adds nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return torch.zeros_like(hidden_states), None


def apply(model, maps: list[AffineMap] | None = None, method: str = "nbl", layers: list[int] | None = None):
    """Replace attention in place: with ``maps`` (method ``nbl``) or in ``layers`` (method ``drop``).
    Returns ``model``."""
    if method not in METHODS:
        raise AttnlabError(f"unknown method {method!r} (use one of {', '.join(METHODS)})")
    n_layers = len(decoder_layers(model))
    targets = [m.layer for m in maps] if method == "nbl" else list(layers or [])
    bad = [i for i in targets if not 0 <= i < n_layers]
    if bad:
        raise AttnlabError(f"layer(s) {bad} do not exist (the model has layers 0..{n_layers - 1})")
    param = next(model.parameters())
    if method == "nbl":
        for m in maps:
            # the float64 fit rounded once, straight to the model's dtype, on the model's device
            weight, bias = (torch.from_numpy(np.asarray(v)).to(device=param.device, dtype=param.dtype)
                            for v in (m.weight, m.bias))
            replace_attention(model, m.layer, LinearAttention(weight, bias))
    else:
        for i in targets:
            replace_attention(model, i, DroppedAttention())
    return model


def replaced_layers(model) -> dict[int, str]:
    """Which layers are replaced, and by what ("nbl" or "drop")."""
    out = {}
    for layer in decoder_layers(model):
        if isinstance(layer.attention, LinearAttention):
            out[layer.index] = "nbl"
        elif isinstance(layer.attention, DroppedAttention):
            out[layer.index] = "drop"
    return out
