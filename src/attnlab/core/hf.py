"""The one adapter over transformers internals: where each supported family keeps its decoder layers,
their attention and the attention's input norm; loading local or packaged checkpoints.

Every other module asks this file, never ``model.model.layers`` directly, so a new family is one entry
in :data:`FAMILIES`. The Llama family is here; others (GPT-2, BERT-style encoders) arrive with ``nbl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import AttnlabError
from .models import checkpoint_dir


@dataclass(frozen=True)
class Family:
    """Attribute paths inside a model of one family (dotted, from the top-level model)."""

    layers: str          # the ModuleList of decoder layers
    attention: str       # inside a layer: the self-attention module
    attention_norm: str  # inside a layer: the norm applied to the attention's input (pre-norm)
    pre_norm: bool = True


_LLAMA = Family(layers="model.layers", attention="self_attn", attention_norm="input_layernorm")

#: config.model_type -> where its parts live. Llama, Mistral, Qwen2 and SmolLM2 (a Llama) share a layout.
FAMILIES: dict[str, Family] = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA}


@dataclass
class DecoderLayer:
    index: int
    block: "object"           # the whole decoder layer (torch.nn.Module)
    attention: "object"       # its self-attention
    attention_norm: "object"  # the norm in front of the attention


def _getattr_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def family_of(model) -> Family:
    """The layout of ``model``'s family, or a one-line error listing the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise AttnlabError(f"unsupported architecture {model_type!r} (supported: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[model_type]


def decoder_layers(model) -> list[DecoderLayer]:
    """The decoder layers of ``model`` with their attention and attention norm, in order."""
    fam = family_of(model)
    layers = _getattr_path(model, fam.layers)
    return [DecoderLayer(i, block, _getattr_path(block, fam.attention), _getattr_path(block, fam.attention_norm))
            for i, block in enumerate(layers)]


def load_causal_lm(spec: str | Path, dtype: str = "float32"):
    """(model, tokenizer) for a packaged name (e.g. ``smollm2``) or a local HF directory, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint_dir(spec)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise AttnlabError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    family_of(model)  # refuse unsupported families up front, with the list of supported ones
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer
