"""The sweep's language model and exact parameter counts for it and for published architectures.

The model is a pre-LN decoder-only GPT-2 block stack (learned positions, d_ff = 4d, biases, tied LM
head), small enough to read top to bottom. Its non-embedding count is ``L(12d^2 + 13d) + 2d``; Kaplan et
al. (2020, eq. 2.1) and Levine et al. (2020, Sec. 4) drop the lower-order terms and use ``12 L d^2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import AttnlabError


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Decoder-only LM: token + position embeddings, ``depth`` blocks, final LN, head tied to the embedding."""

    def __init__(self, vocab: int, seq_len: int, depth: int, width: int, heads: int):
        super().__init__()
        check_shape(depth, width, heads)
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: residual projections scaled by 1/sqrt(2L)
            for lin in (block.proj, block.out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.tok.weight.T
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def non_embedding_parameters(self) -> int:
        """Parameters outside the token and position embeddings (the tied head is the embedding)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(("tok.", "pos.")))


def check_shape(depth: int, width: int, heads: int) -> None:
    """One-line errors for shapes no model can have."""
    if depth < 1 or width < 1 or heads < 1:
        raise AttnlabError(f"depth, width and heads must be positive, got L={depth}, d={width}, H={heads}")
    if width % heads:
        raise AttnlabError(f"width {width} is not divisible by {heads} heads (choose a multiple of the head count)")
