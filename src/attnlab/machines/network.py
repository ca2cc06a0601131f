"""The compiled network as math: one forward step over a window, in numpy (no torch).

``network_logits`` is the specification every executor is checked against (the torch ``nn.Module`` in
:mod:`.module` equals it); ``rnd`` emulates finite precision (round after each operation) and ``beta``
swaps hardmax for softmax (the softmax ablation in docs/machines.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .compile import CompiledTransformer

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

    Without ``rnd`` and ``beta`` this is exact integer arithmetic carried in float64 (BLAS speed): weights and
    inputs are small integers, so every product and partial sum is an integer far below 2^53, exact in any
    summation order, with or without FMA, on any BLAS or CPU.
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
    if rnd is _identity:
        head = np.einsum("bw,bwc->bc", att, v)
    else:
        head = tree_sum(rnd(att[..., None] * v), axis=1, rnd=rnd)
    xs = rnd(x_cur + matmul(head, w["w_o"], rnd))
    h = np.maximum(rnd(matmul(xs, w["w1"], rnd) + w["b1"]), 0)
    return matmul(h, w["w2"], rnd)
