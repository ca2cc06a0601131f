"""The one adapter over transformers internals: where each supported family keeps its decoder layers,
the residual stream entering a layer's attention, the attention output before the residual add, and
which modules to swap to replace that attention; plus loading local or packaged checkpoints.

Every other module asks this file, never ``model.model.layers`` directly, so a new family is one entry
in :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import AttnlabError
from .models import checkpoint_dir


@dataclass(frozen=True)
class Family:
    """Dotted attribute paths of one family's parts (``layers`` from the model, the rest from a layer).

    X, the residual stream entering the attention sub-layer, is the *input* of ``x_tap``; A, the attention
    output before the residual add, is the (first) *output* of ``a_tap``. Replacing the attention by a
    token-wise map swaps ``attention`` for a module returning ``(map(X), None)`` and ``bypass`` for
    identities, so that the layer computes ``norm?(X + map(X))`` with its own residual and norms.
    """

    layers: str
    attention: str           # the module swapped for the affine map (it receives X once `bypass` is identity)
    x_tap: str               # the module whose input is X
    a_tap: str               # the module whose output is A
    bypass: tuple[str, ...]  # modules replaced by identity (the pre-norm, a post-attention norm; BERT's dense)
    causal: bool = True      # a causal LM (perplexity, generate) or an encoder
    #: the MLP sub-layer and its norms, for dropping a whole block (ShortGPT): the MLP is swapped for a module
    #: returning zeros and ``mlp_bypass`` for identities, so the block passes its input on. None: post-norm
    #: (BERT), where no swap makes a block the identity.
    mlp: str | None = "mlp"
    mlp_bypass: tuple[str, ...] = ("post_attention_layernorm",)


_LLAMA = Family(layers="model.layers", attention="self_attn", x_tap="input_layernorm", a_tap="self_attn",
                bypass=("input_layernorm",))
_GPT2 = Family(layers="transformer.h", attention="attn", x_tap="ln_1", a_tap="attn", bypass=("ln_1",),
               mlp_bypass=("ln_2",))
# BERT (post-LN): attention.output computes LayerNorm(dense(context) + X); A is dense's output, and the map
# replaces self-attention + dense together, keeping the post-attention LayerNorm.
_BERT = Family(layers="encoder.layer", attention="attention.self", x_tap="attention", a_tap="attention.output.dense",
               bypass=("attention.output.dense",), causal=False, mlp=None, mlp_bypass=())
# Gemma 2/3: X + post_attention_layernorm(self_attn(input_layernorm(X))): A is the post-attention norm's output,
# and the map replaces both norms with the attention (the tap the official code has no family for).
_GEMMA = Family(layers="model.layers", attention="self_attn", x_tap="input_layernorm",
                a_tap="post_attention_layernorm", bypass=("input_layernorm", "post_attention_layernorm"),
                mlp_bypass=("pre_feedforward_layernorm", "post_feedforward_layernorm"))
# OLMo 2: no input norm, X + post_attention_layernorm(self_attn(X)).
_OLMO2 = Family(layers="model.layers", attention="self_attn", x_tap="self_attn", a_tap="post_attention_layernorm",
                bypass=("post_attention_layernorm",), mlp_bypass=("post_feedforward_layernorm",))

#: config.model_type -> where its parts live. Llama, Mistral, Qwen2, Qwen3, Phi-3 and SmolLM2 (a Llama) share a
#: layout (Qwen3's q/k norms and Phi-3's fused projections are inside the attention module that is replaced).
FAMILIES: dict[str, Family] = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "phi3": _LLAMA,
                               "gemma2": _GEMMA, "gemma3_text": _GEMMA, "olmo2": _OLMO2, "gpt2": _GPT2,
                               "bert": _BERT}


@dataclass
class DecoderLayer:
    index: int
    block: "object"      # the whole layer (torch.nn.Module)
    attention: "object"  # the module that nbl replaces (attnlab.nbl.hub.replace_layer)
    x_tap: "object"      # its input is X
    a_tap: "object"      # its output is A


def get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def family_of(model) -> Family:
    """The layout of the family of ``model`` (a model or its config), or a one-line error listing the supported."""
    model_type = getattr(getattr(model, "config", model), "model_type", None)
    if model_type not in FAMILIES:
        raise AttnlabError(f"unsupported architecture {model_type!r} (supported: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[model_type]


def layer_list(model):
    """The ``nn.ModuleList`` holding ``model``'s layers (assigning into it swaps a whole layer)."""
    return get_path(model, family_of(model).layers)


def decoder_layers(model) -> list[DecoderLayer]:
    """The layers of ``model`` with the modules that carry X and A, in order."""
    fam = family_of(model)
    return [DecoderLayer(i, block, get_path(block, fam.attention), get_path(block, fam.x_tap),
                         get_path(block, fam.a_tap))
            for i, block in enumerate(get_path(model, fam.layers))]


def first_tensor(output):
    """A module's output tensor: transformers returns a tensor or a tuple whose first item is the tensor."""
    return output[0] if isinstance(output, (tuple, list)) else output


def load_model(spec: str | Path, dtype: str = "float32", **options):
    """The model of a packaged name (``smollm2``, ``minilm``) or a local HF directory, in eval mode.
    Causal families load with their LM head; encoders as the bare encoder. ``options`` go to ``from_pretrained``
    (e.g. ``device_map``, ``max_memory``)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .runtime import torch_dtype

    hf_logging.disable_progress_bar()  # a sub-second "Loading weights" bar per model is noise on stderr
    path = checkpoint_dir(spec)
    dtype_ = torch_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError) as e:  # no model_type, unreadable config.json: the user's folder, not our bug
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AttnlabError(f"{path}: not a loadable HF checkpoint ({first[:160]})") from None
    fam = family_of(config)  # refuse unsupported families before loading weights
    loader = AutoModelForCausalLM if fam.causal else AutoModel
    return loader.from_pretrained(path, dtype=dtype_, **options).eval()


def load_tokenizer(spec: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint_dir(spec))


def load_causal_lm(spec: str | Path, dtype: str = "float32"):
    """(model, tokenizer) of a causal LM; an encoder is refused with a one-line error."""
    model = load_model(spec, dtype)
    if not family_of(model).causal:
        raise AttnlabError(f"{spec}: is an encoder ({model.config.model_type}), not a causal language model")
    return model, load_tokenizer(spec)
