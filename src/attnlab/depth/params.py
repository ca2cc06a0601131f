"""Exact parameter counts and FLOPs per token of real architectures, and the published shapes the planner
places on its frontier.

Each family is counted as its reference implementation builds it (tested against ``sum(p.numel())`` of
the transformers model instantiated on the meta device, for every family):

* ``gpt2``: HF ``GPT2LMHeadModel``, GPT-3, and the sweep's own model (:class:`attnlab.depth.model.GPT`):
  biases everywhere, two LayerNorms per block, a final LayerNorm, learned positions, head tied unless
  ``tied=False``.
* ``bert``: HF ``BertModel``: word + position + token-type embeddings with a LayerNorm, post-LN blocks,
  the pooler (which BERT's "110M"/"340M" include), no MLM head.
* the decoder families of :data:`DECODERS` (``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``gemma``,
  ``gemma2``, ``gemma3_text``): RMSNorm, gated MLP (SwiGLU/GeGLU: gate, up, down of ``ffn`` units), grouped
  key/value heads of ``head_dim``, rotary positions (no parameters); what differs between them (biases,
  norms per block, q/k norms, the config's defaults) is one :class:`Decoder` row each.

The *non-embedding* count is everything but the token/position/type tables and an untied output head,
as Kaplan et al. (2020, Sec. 2.1) count N; ``kaplan`` is their ``12 L d^2`` (eq. 2.1), the convention of
Levine et al.'s fitted law. FLOPs per token follow Kaplan et al. (2020, Table 1): see :func:`flops`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import AttnlabError


def kaplan_non_embedding(depth: float, width: float) -> float:
    """``N = 12 L d^2`` (Kaplan et al. 2020, eq. 2.1), the budget convention of Levine et al.'s fit."""
    return 12.0 * depth * width * width


@dataclass(frozen=True)
class Architecture:
    """A transformer shape and enough of its family's details to count its parameters exactly."""

    name: str
    family: str  # a key of FAMILIES
    depth: int
    width: int
    vocab: int
    seq_len: int = 0  # learned positions (gpt2, bert); for rotary families only the FLOPs' default context
    heads: int = 1
    kv_heads: int | None = None  # grouped-query attention; None means heads
    ffn: int | None = None  # feed-forward hidden size; None means 4 * width
    tied: bool = True
    source: str = ""
    head_dim: int | None = None  # decoders: None means width // heads
    attention_bias: bool = False  # decoders whose Decoder row takes the config's attention_bias
    mlp_bias: bool = False  # llama's mlp_bias

    @property
    def ffn_width(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.width

    @property
    def head_width(self) -> int:
        if self.head_dim is not None:
            return self.head_dim
        if self.width % self.heads:
            raise AttnlabError(f"{self.name}: width {self.width} is not divisible by {self.heads} heads "
                               "(give the head dimension)")
        return self.width // self.heads

    @property
    def attention_width(self) -> int:
        """``d_attn`` of Kaplan et al. Table 1: query heads x head dimension (``width`` for gpt2/bert)."""
        return self.width if self.family in ("gpt2", "bert") else self.heads * self.head_width


@dataclass(frozen=True)
class Decoder:
    """What one HF decoder family fixes about its blocks, and its config's defaults.

    ``qkv_bias``/``o_bias``: ``None`` means the config's ``attention_bias`` decides; ``mlp_bias`` ``None``
    means the config's ``mlp_bias`` does. ``head_dim`` and ``kv_heads``: the config class's defaults when a
    config.json leaves them out (``None``: width // heads, and heads).
    """

    model_class: str
    norms: int = 2  # RMSNorms of width d per block
    qk_norm: bool = False  # an RMSNorm of head_dim on queries and on keys
    tied: bool = False  # tie_word_embeddings default
    head_dim: int | None = None
    kv_heads: int | None = None
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    mlp_bias: bool | None = False


#: model_type -> its decoder row, read from the HF modeling code (transformers 5.x).
DECODERS: dict[str, Decoder] = {
    "llama": Decoder("LlamaForCausalLM", mlp_bias=None),
    "mistral": Decoder("MistralForCausalLM", kv_heads=8, qkv_bias=False, o_bias=False),
    "qwen2": Decoder("Qwen2ForCausalLM", kv_heads=32, qkv_bias=True, o_bias=False),
    "qwen3": Decoder("Qwen3ForCausalLM", qk_norm=True, head_dim=128, kv_heads=32),
    "gemma": Decoder("GemmaForCausalLM", tied=True, head_dim=256, kv_heads=16),
    "gemma2": Decoder("Gemma2ForCausalLM", norms=4, tied=True, head_dim=256, kv_heads=4),
    "gemma3_text": Decoder("Gemma3ForCausalLM", norms=4, qk_norm=True, tied=True, head_dim=256, kv_heads=4),
}


def _gpt2(a: Architecture) -> dict[str, int]:
    d, f = a.width, a.ffn_width
    return {"attention": a.depth * (4 * d * d + 4 * d), "feed_forward": a.depth * (2 * d * f + f + d),
            "norms": a.depth * 4 * d + 2 * d, "token_embedding": a.vocab * d, "position_embedding": a.seq_len * d,
            "lm_head": 0 if a.tied else a.vocab * d}


def _bert(a: Architecture) -> dict[str, int]:
    d, f = a.width, a.ffn_width
    return {"attention": a.depth * 4 * (d * d + d), "feed_forward": a.depth * (2 * d * f + f + d),
            "norms": a.depth * 4 * d, "pooler": d * d + d, "token_embedding": (a.vocab + 2) * d + 2 * d,
            "position_embedding": a.seq_len * d}  # 2 token types and the embedding LayerNorm with the tokens


def _decoder(a: Architecture) -> dict[str, int]:
    row = DECODERS[a.family]
    d, f, hd = a.width, a.ffn_width, a.head_width
    q, kv = a.heads * hd, (a.kv_heads or a.heads) * hd
    qkv_bias = a.attention_bias if row.qkv_bias is None else row.qkv_bias
    o_bias = a.attention_bias if row.o_bias is None else row.o_bias
    mlp_bias = a.mlp_bias if row.mlp_bias is None else row.mlp_bias
    attention = 2 * d * q + 2 * d * kv + qkv_bias * (q + 2 * kv) + o_bias * d + row.qk_norm * 2 * hd
    return {"attention": a.depth * attention, "feed_forward": a.depth * (3 * d * f + mlp_bias * (2 * f + d)),
            "norms": a.depth * row.norms * d + d, "token_embedding": a.vocab * d,
            "lm_head": 0 if a.tied else a.vocab * d}


#: family -> parts counter (per the module docstring); each decoder family shares one counter.
FAMILIES: dict[str, Callable[[Architecture], dict[str, int]]] = {"gpt2": _gpt2, "bert": _bert,
                                                                 **dict.fromkeys(DECODERS, _decoder)}
#: Parts that are embeddings (not counted in N, Kaplan et al. Sec. 2.1); the rest are non-embedding.
EMBEDDING_PARTS = ("token_embedding", "position_embedding", "lm_head")


def parts(arch: Architecture) -> dict[str, int]:
    """Exact parameters of ``arch`` by part (attention, feed_forward, norms, [pooler], embeddings, lm_head)."""
    if arch.family not in FAMILIES:
        raise AttnlabError(f"unknown architecture family {arch.family!r} (use {', '.join(FAMILIES)})")
    for what, value in (("depth", arch.depth), ("width", arch.width), ("vocab", arch.vocab), ("heads", arch.heads),
                        ("kv_heads", arch.kv_heads or arch.heads), ("ffn", arch.ffn_width),
                        ("head_dim", arch.head_dim or 1)):
        if value < 1:
            raise AttnlabError(f"{arch.name}: {what} must be a positive integer, got {value}")
    if arch.heads % (arch.kv_heads or arch.heads):
        raise AttnlabError(f"{arch.name}: {arch.heads} heads are not a multiple of {arch.kv_heads} key/value heads")
    return FAMILIES[arch.family](arch)


def count(arch: Architecture) -> dict[str, int]:
    """``{"non_embedding", "embedding", "total", "kaplan"}`` for ``arch``, counted per its family's rule.

    ``embedding`` holds the token (and position/type) tables plus an untied output head; ``kaplan`` is
    ``12 L d^2`` for comparison with the laws stated in that convention.
    """
    p = parts(arch)
    emb = sum(v for k, v in p.items() if k in EMBEDDING_PARTS)
    body = sum(p.values()) - emb
    return {"non_embedding": body, "embedding": emb, "total": body + emb,
            "kaplan": round(kaplan_non_embedding(arch.depth, arch.width))}


def flops(arch: Architecture, context: int | None = None) -> dict[str, int]:
    """Forward FLOPs per token, Kaplan et al. (2020) Table 1: ``2 N + 2 L n_ctx d_attn``.

    ``2 N`` (N the exact non-embedding count: a multiply-add per weight) plus the attention scores over the
    full context ``n_ctx`` (default: ``arch.seq_len``; no causal halving, no sliding windows), with
    ``d_attn`` = heads x head dimension. The de-embedding (``2 d V``, which Table 1 lists but leaves out of
    ``C_forward``) is reported on its own; training is ``3x`` forward (Kaplan Sec. 2.1: ``C ~ 6 N``).
    """
    n_ctx = arch.seq_len if context is None else context
    if n_ctx < 1:
        raise AttnlabError(f"{arch.name}: FLOPs per token need a context length (give --context)")
    n = count(arch)["non_embedding"]
    forward = 2 * n + 2 * arch.depth * n_ctx * arch.attention_width
    return {"context": n_ctx, "forward": forward, "de_embedding": 2 * arch.width * arch.vocab,
            "training": 3 * forward, "kaplan_6N": 6 * n}


def gpt2_like(depth: int, width: int, vocab: int, seq_len: int, heads: int = 1) -> Architecture:
    """The sweep model's shape as an :class:`Architecture` (GPT-2 family, tied head)."""
    return Architecture(f"gpt L{depth} d{width}", "gpt2", depth, width, vocab, seq_len, heads)


# ---------------------------------------------------------------- HF config.json <-> Architecture


def _positive(cfg: Mapping[str, Any], key: str, name: str, default: Any = None) -> int:
    value = cfg.get(key)
    value = default if value is None else value  # absent or null: the config class's default
    if value is None:
        raise AttnlabError(f"{name}: config has no {key!r} (a {cfg.get('model_type')} config.json names it)")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AttnlabError(f"{name}: {key} must be a positive integer, got {value!r}")
    return value


def _flag(cfg: Mapping[str, Any], key: str, name: str, default: bool) -> bool:
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise AttnlabError(f"{name}: {key} must be true or false, got {value!r}")
    return value


def from_config(cfg: Mapping[str, Any], name: str = "config") -> Architecture:
    """The :class:`Architecture` of an HF ``config.json`` (``model_type`` gpt2, bert or one of
    :data:`DECODERS`). Keys that fix the shape are required; the rest take the config class's defaults
    (tied embeddings, key/value heads = heads, head_dim, biases off)."""
    kind = cfg.get("model_type")
    if kind == "gpt2":
        d = _positive(cfg, "n_embd", name)
        inner = cfg.get("n_inner")
        return Architecture(name, "gpt2", _positive(cfg, "n_layer", name), d, _positive(cfg, "vocab_size", name),
                            _positive(cfg, "n_positions", name), _positive(cfg, "n_head", name),
                            ffn=None if inner is None else _positive(cfg, "n_inner", name),
                            tied=_flag(cfg, "tie_word_embeddings", name, True), source="config.json")
    if kind == "bert":
        return Architecture(name, "bert", _positive(cfg, "num_hidden_layers", name),
                            _positive(cfg, "hidden_size", name), _positive(cfg, "vocab_size", name),
                            _positive(cfg, "max_position_embeddings", name),
                            _positive(cfg, "num_attention_heads", name),
                            ffn=_positive(cfg, "intermediate_size", name), source="config.json")
    if kind not in DECODERS:
        known = ", ".join(["gpt2", "bert", *DECODERS])
        hint = " (for a multimodal config, count its text_config)" if "text_config" in cfg else ""
        raise AttnlabError(f"{name}: model_type {kind!r} is not counted{hint}; supported: {known}")
    row = DECODERS[kind]
    heads = _positive(cfg, "num_attention_heads", name)
    context = 0 if cfg.get("max_position_embeddings") is None else _positive(cfg, "max_position_embeddings", name)
    return Architecture(
        name, kind, _positive(cfg, "num_hidden_layers", name), _positive(cfg, "hidden_size", name),
        _positive(cfg, "vocab_size", name), context, heads,
        _positive(cfg, "num_key_value_heads", name, row.kv_heads or heads), _positive(cfg, "intermediate_size", name),
        _flag(cfg, "tie_word_embeddings", name, row.tied), "config.json",
        _positive(cfg, "head_dim", name, row.head_dim or _positive(cfg, "hidden_size", name) // heads),
        _flag(cfg, "attention_bias", name, False), _flag(cfg, "mlp_bias", name, False))


def hf_config(arch: Architecture) -> dict[str, Any]:
    """The HF ``config.json`` fields of ``arch`` (the inverse of :func:`from_config`; not for bert's pooler
    or the sweep model's GELU, which transformers' configs do not name)."""
    if arch.family == "gpt2":
        return {"model_type": "gpt2", "n_layer": arch.depth, "n_embd": arch.width, "n_head": arch.heads,
                "n_inner": arch.ffn, "vocab_size": arch.vocab, "n_positions": arch.seq_len,
                "tie_word_embeddings": arch.tied}
    if arch.family == "bert":
        return {"model_type": "bert", "num_hidden_layers": arch.depth, "hidden_size": arch.width,
                "num_attention_heads": arch.heads, "intermediate_size": arch.ffn_width, "vocab_size": arch.vocab,
                "max_position_embeddings": arch.seq_len}
    return {"model_type": arch.family, "num_hidden_layers": arch.depth, "hidden_size": arch.width,
            "num_attention_heads": arch.heads, "num_key_value_heads": arch.kv_heads or arch.heads,
            "head_dim": arch.head_width, "intermediate_size": arch.ffn_width, "vocab_size": arch.vocab,
            "tie_word_embeddings": arch.tied, "attention_bias": arch.attention_bias, "mlp_bias": arch.mlp_bias,
            **({"max_position_embeddings": arch.seq_len} if arch.seq_len else {})}


# ---------------------------------------------------------------- published shapes

_GPT3 = "Brown et al. 2020, Table 2.1 (GPT-2 architecture, n_ctx 2048)"
_L2, _L3 = "Touvron et al. 2023 (Llama 2), HF config", "Llama 3 model card, HF config"
_MOB = "Liu et al. 2024 (MobileLLM), released HF configs; tied embeddings, V=32000"

#: Well-known shapes placed on the planner's frontier plot. Decoders carry their HF config.json's shape
#: fields (seq_len = max_position_embeddings, used only as the FLOPs' default context).
KNOWN_MODELS: tuple[Architecture, ...] = (
    Architecture("BERT-base", "bert", 12, 768, 30522, 512, 12, source="Devlin et al. 2019"),
    Architecture("BERT-large", "bert", 24, 1024, 30522, 512, 16, source="Devlin et al. 2019"),
    Architecture("GPT-2", "gpt2", 12, 768, 50257, 1024, 12, source="Radford et al. 2019"),
    Architecture("GPT-2 medium", "gpt2", 24, 1024, 50257, 1024, 16, source="Radford et al. 2019"),
    Architecture("GPT-2 large", "gpt2", 36, 1280, 50257, 1024, 20, source="Radford et al. 2019"),
    Architecture("GPT-2 XL", "gpt2", 48, 1600, 50257, 1024, 25, source="Radford et al. 2019"),
    Architecture("GPT-3 Medium", "gpt2", 24, 1024, 50257, 2048, 16, source=_GPT3),
    Architecture("GPT-3 XL", "gpt2", 24, 2048, 50257, 2048, 24, source=_GPT3),
    Architecture("GPT-3 2.7B", "gpt2", 32, 2560, 50257, 2048, 32, source=_GPT3),
    Architecture("GPT-3 6.7B", "gpt2", 32, 4096, 50257, 2048, 32, source=_GPT3),
    Architecture("GPT-3 13B", "gpt2", 40, 5140, 50257, 2048, 40, source=_GPT3),
    Architecture("GPT-3 175B", "gpt2", 96, 12288, 50257, 2048, 96, source=_GPT3),
    Architecture("Llama-2 7B", "llama", 32, 4096, 32000, 4096, 32, 32, 11008, False, _L2),
    Architecture("Llama-2 13B", "llama", 40, 5120, 32000, 4096, 40, 40, 13824, False, _L2),
    Architecture("Llama-2 70B", "llama", 80, 8192, 32000, 4096, 64, 8, 28672, False, _L2),
    Architecture("Llama-3 8B", "llama", 32, 4096, 128256, 8192, 32, 8, 14336, False, _L3),
    Architecture("Llama-3 70B", "llama", 80, 8192, 128256, 8192, 64, 8, 28672, False, _L3),
    Architecture("Llama-3.2 1B", "llama", 16, 2048, 128256, 131072, 32, 8, 8192, True,
                 "meta-llama/Llama-3.2-1B config.json", 64),
    Architecture("SmolLM2-135M", "llama", 30, 576, 49152, 8192, 9, 3, 1536, True,
                 "HuggingFaceTB/SmolLM2-135M config.json"),
    Architecture("Mistral-7B", "mistral", 32, 4096, 32000, 32768, 32, 8, 14336, False,
                 "mistralai/Mistral-7B-v0.1 config.json (Jiang et al. 2023)"),
    Architecture("Qwen2-0.5B", "qwen2", 24, 896, 151936, 0, 14, 2, 4864, True, "Qwen/Qwen2-0.5B config.json"),
    Architecture("Qwen2-7B", "qwen2", 28, 3584, 152064, 0, 28, 4, 18944, False, "Qwen/Qwen2-7B config.json"),
    Architecture("Gemma-2B", "gemma", 18, 2048, 256000, 8192, 8, 1, 16384, True, "google/gemma-2b config.json", 256),
    Architecture("Gemma-7B", "gemma", 28, 3072, 256000, 8192, 16, 16, 24576, True, "google/gemma-7b config.json",
                 256),
    Architecture("Gemma-2 2B", "gemma2", 26, 2304, 256000, 8192, 8, 4, 9216, True, "google/gemma-2-2b config.json",
                 256),
)

#: MobileLLM's released "deep and thin" configurations, by nominal size.
MOBILELLM: tuple[Architecture, ...] = (
    Architecture("MobileLLM-125M", "llama", 30, 576, 32000, 0, 9, 3, 1536, True, _MOB),
    Architecture("MobileLLM-350M", "llama", 32, 960, 32000, 0, 15, 5, 2560, True, _MOB),
    Architecture("MobileLLM-600M", "llama", 40, 1152, 32000, 0, 18, 6, 3072, True, _MOB),
    Architecture("MobileLLM-1B", "llama", 54, 1280, 32000, 0, 20, 5, 3584, True, _MOB),
    Architecture("MobileLLM-1.5B", "llama", 54, 1600, 32000, 0, 25, 5, 4352, True, _MOB),
)


def known(name: str) -> Architecture | None:
    """The published shape called ``name`` (case and spaces/dashes ignored), or None."""
    key = name.lower().replace(" ", "").replace("-", "")
    return next((a for a in KNOWN_MODELS + MOBILELLM if a.name.lower().replace(" ", "").replace("-", "") == key),
                None)
