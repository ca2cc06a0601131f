"""The modules that stand in for a replaced attention sub-layer, and the model classes of a linearized
checkpoint. This file imports only torch (and transformers, inside :func:`linearized_classes`): ``save``
ships a copy of it as the folder's ``modeling_nbl.py``, which ``from_pretrained(dir, trust_remote_code=True)``
imports through the config's ``auto_map``, as transformers does for any custom architecture.

The config of a linearized checkpoint holds ``nbl``: where the family keeps its layers, which module of a
layer is swapped, which are bypassed (see ``attnlab/core/hf.py``'s ``Family``), and what replaced each layer.
The map's parameters are ordinary weights of the checkpoint (``...self_attn.linear.weight``); the replaced
attention's are not in it.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``model_type`` of a linearized checkpoint: unknown to transformers, so a plain ``from_pretrained`` refuses it
MODEL_TYPE = "attnlab_nbl"


class LinearAttention(nn.Module):
    """Token-wise affine stand-in for self-attention (paper Prop. 3.1): returns (W x + b, None) like an
    attention module. The map is held (and runs) in ``weight``'s dtype on ``weight``'s device."""

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


class DroppedMLP(nn.Module):
    """With :class:`DroppedAttention`, a dropped block (ShortGPT, Men et al.): the MLP adds nothing either."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return torch.zeros_like(hidden_states)


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` under ``root``."""
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def replace_layer(model: nn.Module, layers: str, index: int, attention: str, bypass: list[str],
                  module: nn.Module) -> None:
    """Swap ``attention`` of layer ``index`` (of the module list at ``layers``) for ``module`` and each of
    ``bypass`` for an identity, so that the layer computes ``norm?(X + module(X))`` (paths are dotted)."""
    block = model.get_submodule(layers)[index]
    for path in bypass:
        set_module(block, path, nn.Identity())
    set_module(block, attention, module)


def drop_block(model: nn.Module, layers: str, index: int, attention: str, bypass: list[str], mlp: str,
               mlp_bypass: list[str]) -> None:
    """Make layer ``index`` pass its input on: both sub-layers add zero, their norms are identities."""
    replace_layer(model, layers, index, attention, [*bypass, *mlp_bypass], DroppedAttention())
    set_module(model.get_submodule(layers)[index], mlp, DroppedMLP())


def linearize_from_spec(model: nn.Module, spec: dict) -> None:
    """Replace the layers that ``spec`` (a config's ``nbl``) names, with maps of the right shape on ``model``'s
    device and dtype (their values are the checkpoint's)."""
    param = next(model.parameters())
    d = model.config.hidden_size
    for index, method in sorted(spec["replaced"].items(), key=lambda kv: int(kv[0])):
        if method == "block":
            drop_block(model, spec["layers"], int(index), spec["attention"], spec["bypass"], spec["mlp"],
                       spec["mlp_bypass"])
            continue
        if method == "nbl":
            module = LinearAttention(torch.zeros(d, d, device=param.device, dtype=param.dtype),
                                     torch.zeros(d, device=param.device, dtype=param.dtype))
        else:
            module = DroppedAttention()
        replace_layer(model, spec["layers"], int(index), spec["attention"], spec["bypass"], module)


def linearized_model_class(base_model_class: type) -> type:
    """``base_model_class`` whose construction replaces the layers named in ``config.nbl``."""

    class NBLModel(base_model_class):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            linearize_from_spec(self, config.nbl)

    NBLModel.__name__ = NBLModel.__qualname__ = "NBL" + base_model_class.__name__
    return NBLModel


def linearized_classes(base_config_class: type, base_model_class: type) -> tuple[type, type]:
    """(config class, model class) of a linearized checkpoint of this family, with ``model_type`` MODEL_TYPE."""

    class NBLConfig(base_config_class):
        model_type = MODEL_TYPE

    model_class = linearized_model_class(base_model_class)
    model_class.config_class = NBLConfig
    return NBLConfig, model_class
