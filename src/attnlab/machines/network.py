"""The compiled network as math: one forward step over a window, and the torch ``nn.Module``.

``network_logits`` is the specification every executor is checked against; ``rnd`` emulates finite
precision (round after each operation) and ``beta`` swaps hardmax for softmax (the ablation of §2.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .compile import CompiledTransformer, load_compiled

Round = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def tree_sum(x: np.ndarray, axis: int, rnd: Round) -> np.ndarray:
    """Sum along ``axis`` by pairwise halving, rounding after every addition (a p-bit accumulator)."""
    x = np.moveaxis(x, axis, 0)
    while x.shape[0] > 1:
        if x.shape[0] % 2:
            x = np.concatenate([x, np.zeros_like(x[:1])])
        x = rnd(x[0::2] + x[1::2])
    return x[0]


def matmul(a: np.ndarray, b: np.ndarray, rnd: Round) -> np.ndarray:
    """a @ b with every product and every partial sum rounded (exact path when rnd is the identity)."""
    if rnd is _identity:
        return a @ b
    return tree_sum(rnd(a[..., :, None] * b), axis=-2, rnd=rnd)


def hardmax(scores: np.ndarray) -> np.ndarray:
    """One-hot at the first (oldest) maximal score: a strict rule, exact in any precision."""
    out = np.zeros_like(scores)
    np.put_along_axis(out, scores.argmax(-1)[..., None], 1.0, axis=-1)
    return out


def network_logits(model: CompiledTransformer, windows: np.ndarray, rnd: Round | None = None,
                   beta: float | None = None) -> np.ndarray:
    """Logits for the token after each window. ``windows``: (B, W) token ids, oldest first, current last.

    x_j = E[t_j];  score_j = q_cur * (x_j W_K + rpe(W-1-j));  a = hardmax(score) (softmax(beta*score));
    x = x_cur + (Σ_j a_j x_j W_V) W_O;  logits = ReLU(x W1 + b1) W2.
    """
    rnd = rnd or _identity
    w = {k: v.astype(np.float64) for k, v in model.weights.items()}
    windows = np.asarray(windows)
    n = windows.shape[1]
    x_cur = w["embed"][windows[:, -1]]  # (B, d)
    q = matmul(x_cur, w["w_q"], rnd)[:, 0]  # (B,)
    # key/value projections depend on the token id only: computed (and rounded) once per id, gathered
    k_of = matmul(w["embed"], w["w_k"], rnd)[:, 0]
    v_of = matmul(w["embed"], w["w_v"], rnd)
    bias = model.rpe_by_offset(np.arange(n - 1, -1, -1)).astype(np.float64)  # offsets W-1 .. 0
    k = rnd(k_of[windows] + bias)  # (B, W)
    scores = rnd(q[:, None] * k)
    if beta is None:
        att = hardmax(scores)
    else:
        e = np.exp(beta * (scores - scores.max(-1, keepdims=True)))
        att = rnd(e / e.sum(-1, keepdims=True))
    v = v_of[windows]  # (B, W, |Λ|)
    head = tree_sum(rnd(att[..., None] * v), axis=1, rnd=rnd) if rnd is not _identity else np.einsum("bw,bwc->bc", att, v)
    xs = rnd(x_cur + matmul(head, w["w_o"], rnd))
    h = np.maximum(rnd(matmul(xs, w["w1"], rnd) + w["b1"]), 0)
    return matmul(h, w["w2"], rnd)


class MachineTransformer(nn.Module):
    """The compiled network as a plain torch module: ``forward(tokens)`` returns logits (B, T, V).

    Position i attends to the W tokens i-W+1..i (sliding window, hardmax, RPE); positions before the
    window is full have no oldest token and are meaningless (the prompt fills the window).
    """

    def __init__(self, model: CompiledTransformer):
        super().__init__()
        f = {k: torch.tensor(v, dtype=torch.float32) for k, v in model.weights.items()}
        self.window = model.window
        self.embed = nn.Embedding.from_pretrained(f["embed"], freeze=True)
        self.w_q = nn.Linear(model.d_model, 1, bias=False)
        self.w_k = nn.Linear(model.d_model, 1, bias=False)
        self.w_v = nn.Linear(model.d_model, model.n_symbols, bias=False)
        self.w_o = nn.Linear(model.n_symbols, model.d_model, bias=False)
        self.ffn_in = nn.Linear(model.d_model, model.d_ffn)
        self.ffn_out = nn.Linear(model.d_ffn, model.vocab_size, bias=False)
        self.register_buffer("rpe", f["rpe"])  # (current, intermediate, oldest)
        with torch.no_grad():
            for lin, name in ((self.w_q, "w_q"), (self.w_k, "w_k"), (self.w_v, "w_v"), (self.w_o, "w_o"),
                              (self.ffn_in, "w1"), (self.ffn_out, "w2")):
                lin.weight.copy_(f[name].T)
            self.ffn_in.bias.copy_(f["b1"])
        self.requires_grad_(False)

    def rpe_bias(self, t: int) -> torch.Tensor:
        """(T, T) score bias: rpe[type(i - j)] inside the window, -inf outside (and in the future)."""
        off = torch.arange(t)[:, None] - torch.arange(t)[None, :]
        kind = torch.where(off == self.window - 1, 2, torch.where(off == 0, 0, 1))
        bias = self.rpe[kind]
        return bias.masked_fill((off < 0) | (off >= self.window), float("-inf"))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Hardmax attention weights (B, T, T) for residual inputs x (B, T, d): one-hot at the first
        (oldest) maximal score q_i (k_j + rpe(i - j)) inside the window."""
        q, k = self.w_q(x), self.w_k(x)  # (B, T, 1) each
        bias = self.rpe_bias(x.shape[1])
        scores = (q * (k.transpose(1, 2) + bias)).masked_fill(torch.isinf(bias), float("-inf"))
        return torch.nn.functional.one_hot(scores.argmax(-1), x.shape[1]).to(x.dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, T, d)
        x = x + self.w_o(self.attention(x) @ self.w_v(x))
        return self.ffn_out(torch.relu(self.ffn_in(x)))


def load_module(path: str | Path) -> MachineTransformer:
    """Load a compiled machine directory (safetensors + config.json) as an ``nn.Module``."""
    return MachineTransformer(load_compiled(path)).eval()
