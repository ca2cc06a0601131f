"""Swap attention for the fitted affine map (``nbl``) or for nothing (``drop``, Attention Drop); the modules
that take its place are those of :mod:`attnlab.nbl.hub` (shipped with every saved checkpoint).

A replaced layer computes h + W h + b (pre-norm families; BERT: LayerNorm(h + W h + b)); a dropped block
(``block``, ShortGPT) passes h on. Neither touches the KV cache, so a cached generation stores nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ..core.errors import AttnlabError
from ..core.hf import decoder_layers, family_of
from .hub import DroppedAttention, DroppedMLP, LinearAttention, drop_block, replace_layer, set_module
from .lmmse import AffineMap
from .registry import METHODS


def apply(model, maps: list[AffineMap] | None = None, method: str = "nbl", layers: list[int] | None = None):
    """Replace attention in place: with ``maps`` (method ``nbl``) or in ``layers`` (method ``drop``).
    Returns ``model``."""
    if method not in METHODS:
        raise AttnlabError(f"unknown method {method!r} (use one of {', '.join(METHODS)})")
    check_method(model, method)
    n_layers = len(decoder_layers(model))
    targets = [m.layer for m in maps] if method == "nbl" else list(layers or [])
    bad = [i for i in targets if not 0 <= i < n_layers]
    if bad:
        raise AttnlabError(f"layer(s) {bad} do not exist (the model has layers 0..{n_layers - 1})")
    fam = family_of(model)
    dtype = next(model.parameters()).dtype
    if method == "nbl":
        blocks = decoder_layers(model)
        for m in maps:
            # the float64 fit rounded once, straight to the model's dtype, on the device its layer runs on
            weight, bias = (torch.from_numpy(np.asarray(v)).to(device=layer_device(blocks[m.layer].block), dtype=dtype)
                            for v in (m.weight, m.bias))
            replace_layer(model, fam.layers, m.layer, fam.attention, fam.bypass, LinearAttention(weight, bias))
    elif method == "block":
        for i in targets:
            drop_block(model, fam.layers, i, fam.attention, fam.bypass, fam.mlp, fam.mlp_bypass)
    else:
        for i in targets:
            replace_layer(model, fam.layers, i, fam.attention, fam.bypass, DroppedAttention())
    return model


def check_method(model, method: str) -> None:
    """A one-line error for a method the family cannot take (a block drop in a post-norm encoder)."""
    if method == "block" and family_of(model).mlp is None:
        raise AttnlabError(f"method block: {model.config.model_type} is post-norm (a norm after each residual add), "
                           f"so no block of it can be made the identity; use nbl or drop")


def layer_device(block) -> torch.device:
    """The device a layer runs on: accelerate's execution device for a dispatched model (whose offloaded
    weights sit on the meta device between forward passes), else the device of its weights."""
    hook = getattr(block, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    devices = [p.device for p in block.parameters() if p.device.type != "meta"]
    return devices[0] if devices else torch.device("cpu")


def replaced_layers(model) -> dict[int, str]:
    """Which layers are replaced, and by what ("nbl", "drop" or "block")."""
    fam = family_of(model)
    out = {}
    for layer in decoder_layers(model):
        if fam.mlp is not None and isinstance(layer.block.get_submodule(fam.mlp), DroppedMLP):
            out[layer.index] = "block"
        elif isinstance(layer.attention, LinearAttention):
            out[layer.index] = "nbl"
        elif isinstance(layer.attention, DroppedAttention):
            out[layer.index] = "drop"
    return out


@contextmanager
def restored(model) -> Iterator:
    """Undo on exit every replacement made inside: each layer gets back the attention and bypassed modules
    it had on entry (the same objects; nothing is copied)."""
    fam = family_of(model)
    paths = (fam.attention, *fam.bypass) + ((fam.mlp, *fam.mlp_bypass) if fam.mlp is not None else ())
    saved = [(layer.block, {p: layer.block.get_submodule(p) for p in paths}) for layer in decoder_layers(model)]
    try:
        yield model
    finally:
        for block, modules in saved:
            for path, module in modules.items():
                set_module(block, path, module)
