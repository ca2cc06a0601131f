"""Exact parameter counts, and the published shapes the planner places on its frontier.

Each family is counted the way its source counts it:

* ``kaplan``: ``12 L d^2`` non-embedding parameters (Kaplan et al. 2020, eq. 2.1: 4d^2 attention + 8d^2
  feed-forward per layer, no biases, norms or embeddings). Levine et al.'s fitted law is stated in it.
* ``gpt2``: GPT-2/GPT-3 and the sweep's own model (:class:`attnlab.depth.model.GPT`): biases, two
  LayerNorms per block, final LayerNorm, learned positions, LM head tied to the token embedding.
* ``bert``: HF ``BertModel``: word + position + token-type embeddings with a LayerNorm, post-LN blocks,
  the pooler (which BERT's "110M"/"340M" include), no MLM head.
* ``llama``: HF ``LlamaForCausalLM``: no biases, RMSNorm, SwiGLU with ``ffn`` hidden units, grouped
  key/value heads, untied head unless ``tied`` (MobileLLM ties it).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    seq_len: int = 0  # learned positions (gpt2, bert); 0 for rotary (llama)
    heads: int = 1
    kv_heads: int | None = None  # llama: grouped-query attention; None means heads
    ffn: int | None = None  # feed-forward hidden size; None means 4 * width
    tied: bool = True
    source: str = ""

    @property
    def ffn_width(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.width


def _gpt2(a: Architecture) -> tuple[int, int]:
    d, f = a.width, a.ffn_width
    layer = (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d  # qkv, proj, fc, out, 2 LN
    return a.depth * layer + 2 * d, a.vocab * d + a.seq_len * d + (0 if a.tied else a.vocab * d)


def _bert(a: Architecture) -> tuple[int, int]:
    d, f = a.width, a.ffn_width
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
    body = a.depth * layer + (d * d + d)  # + pooler
    return body, (a.vocab + a.seq_len + 2) * d + 2 * d  # word, position, 2 token types, embedding LayerNorm


def _llama(a: Architecture) -> tuple[int, int]:
    d, f = a.width, a.ffn_width
    if d % a.heads:
        raise AttnlabError(f"{a.name}: width {d} is not divisible by {a.heads} heads")
    kv = (a.kv_heads or a.heads) * (d // a.heads)
    layer = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d  # q, o; k, v (grouped); SwiGLU; 2 RMSNorm
    return a.depth * layer + d, a.vocab * d * (1 if a.tied else 2)


#: family -> (non-embedding, embedding) counter, per the module docstring.
FAMILIES = {"gpt2": _gpt2, "bert": _bert, "llama": _llama}


def count(arch: Architecture) -> dict[str, int]:
    """``{"non_embedding", "embedding", "total", "kaplan"}`` for ``arch``, counted per its family's rule.

    ``embedding`` holds the token (and position/type) tables plus an untied output head; ``kaplan`` is
    ``12 L d^2`` for comparison with the laws stated in that convention.
    """
    if arch.family not in FAMILIES:
        raise AttnlabError(f"unknown architecture family {arch.family!r} (use {', '.join(FAMILIES)})")
    body, emb = FAMILIES[arch.family](arch)
    return {"non_embedding": body, "embedding": emb, "total": body + emb,
            "kaplan": round(kaplan_non_embedding(arch.depth, arch.width))}


def gpt2_like(depth: int, width: int, vocab: int, seq_len: int, heads: int = 1) -> Architecture:
    """The sweep model's shape as an :class:`Architecture` (GPT-2 family, tied head)."""
    return Architecture(f"gpt L{depth} d{width}", "gpt2", depth, width, vocab, seq_len, heads)


_GPT3 = "Brown et al. 2020, Table 2.1 (GPT-2 architecture, n_ctx 2048)"
_L2, _L3 = "Touvron et al. 2023 (Llama 2), HF config", "Llama 3 model card, HF config"
_MOB = "Liu et al. 2024 (MobileLLM), released HF configs; tied embeddings, V=32000"

#: Well-known shapes placed on the planner's frontier plot.
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
    Architecture("Llama-2 7B", "llama", 32, 4096, 32000, 0, 32, 32, 11008, False, _L2),
    Architecture("Llama-2 13B", "llama", 40, 5120, 32000, 0, 40, 40, 13824, False, _L2),
    Architecture("Llama-2 70B", "llama", 80, 8192, 32000, 0, 64, 8, 28672, False, _L2),
    Architecture("Llama-3 8B", "llama", 32, 4096, 128256, 0, 32, 8, 14336, False, _L3),
    Architecture("Llama-3 70B", "llama", 80, 8192, 128256, 0, 64, 8, 28672, False, _L3),
)

#: MobileLLM's released "deep and thin" configurations, by nominal size.
MOBILELLM: tuple[Architecture, ...] = (
    Architecture("MobileLLM-125M", "llama", 30, 576, 32000, 0, 9, 3, 1536, True, _MOB),
    Architecture("MobileLLM-350M", "llama", 32, 960, 32000, 0, 15, 5, 2560, True, _MOB),
    Architecture("MobileLLM-600M", "llama", 40, 1152, 32000, 0, 18, 6, 3072, True, _MOB),
    Architecture("MobileLLM-1B", "llama", 54, 1280, 32000, 0, 20, 5, 3584, True, _MOB),
    Architecture("MobileLLM-1.5B", "llama", 54, 1600, 32000, 0, 25, 5, 4352, True, _MOB),
)
