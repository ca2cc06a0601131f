"""The compiled network as math: one forward step over a window, in numpy (no torch).

``network_logits`` is the specification every executor is checked against (the torch ``nn.Module`` in
:mod:`.module` equals it); ``rnd`` emulates finite precision (round after each operation, :class:`Format`)
and ``beta`` swaps hardmax for softmax (the softmax ablation in docs/machines.md). The stages
(``projections``, ``scores``, ``attend``, ``ffn``) are shared with the closed certificate
(:mod:`.certificate`), which evaluates them on every class of windows instead of on sampled ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .compile import CompiledTransformer

Round = Callable[[np.ndarray], np.ndarray]

#: elements of the (rows, inner, cols) product tensor a rounded matmul builds at once
CHUNK_ELEMS = 4_000_000


@dataclass(frozen=True)
class Format:
    """p-bit floating point: a sign, ``exp_bits`` exponent bits and ``man_bits`` mantissa bits (p = 1 + e + m),
    round to nearest even after every operation, saturating, with subnormals (the finite-precision model of
    Li et al. 2024 that the paper's constant-precision claim uses)."""

    exp_bits: int
    man_bits: int

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def name(self) -> str:
        return f"p={self.bits} (e{self.exp_bits}m{self.man_bits})"

    def rounder(self) -> Round:
        """Round to the nearest representable value (ties to even), saturating at the largest."""
        bias = 2 ** (self.exp_bits - 1) - 1
        emin, emax, m = 1 - bias, 2 ** self.exp_bits - 1 - bias, self.man_bits
        top = (2 - 2.0 ** -m) * 2.0 ** emax

        def rnd(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            a = np.abs(x)
            # a = f * 2**e with f in [0.5, 1): floor(log2 a) = e - 1 exactly (no log, no rounding of the log)
            e = np.clip(np.frexp(a)[1] - 1, emin, emax)
            step = np.ldexp(1.0, e - m)
            r = np.minimum(np.round(a / step) * step, top)
            return np.copysign(np.where(np.isfinite(r), r, top), x)

        return rnd


def formats_of(bits: int) -> list[Format]:
    """Every split of ``bits`` into sign, exponent (at least 1 bit) and mantissa."""
    return [Format(e, bits - 1 - e) for e in range(1, bits)]


def identity(x: np.ndarray) -> np.ndarray:
    """Exact arithmetic: no rounding."""
    return x


def round_sparse(x: np.ndarray, rnd: Round) -> np.ndarray:
    """rnd(x) computed on the nonzero entries only: the same values, since every rounder maps ±0 to itself."""
    if rnd is identity:
        return x
    nz = x != 0
    out = np.array(x, dtype=np.float64)
    out[nz] = rnd(out[nz])
    return out


def tree_sum(x: np.ndarray, axis: int, rnd: Round) -> np.ndarray:
    """Sum along ``axis`` by pairwise halving, rounding after every addition (a p-bit accumulator)."""
    x = np.moveaxis(x, axis, 0)
    while x.shape[0] > 1:
        if x.shape[0] % 2:
            x = np.concatenate([x, np.zeros_like(x[:1])])
        x = round_sparse(x[0::2] + x[1::2], rnd)
    return x[0]


def matmul(a: np.ndarray, b: np.ndarray, rnd: Round) -> np.ndarray:
    """a @ b (a: (..., n), b: (n, m)) with every product and every partial sum rounded (exact path when rnd is
    the identity). Rounded, each distinct row of ``a`` and column of ``b`` is computed once, in chunks of
    :data:`CHUNK_ELEMS`."""
    if rnd is identity:
        return a @ b
    rows, inverse = unique_rows(a.reshape(-1, a.shape[-1]))
    cols, col_inverse = unique_rows(b.T)
    out = matmul_tree(rows, cols.T, rnd)
    return out[inverse][:, col_inverse].reshape(*a.shape[:-1], b.shape[-1])


def matmul_tree(a: np.ndarray, b: np.ndarray, rnd: Round) -> np.ndarray:
    """The rounded product of 2-D arrays, the same values as the pairwise tree of rounded products. An output
    with at most one nonzero product x = rnd(a_i b_i) is x itself when rnd(x) = x (each level adds a zero), and
    a @ b computes that one product exactly; only rows with another output go through the tree."""
    single = rnd(a @ b)
    count = (a != 0).astype(np.float64) @ (b != 0).astype(np.float64)
    dense = np.flatnonzero(np.any((count > 1) | (rnd(single) != single), axis=1))
    step = max(1, CHUNK_ELEMS // max(1, b.size))
    for i in range(0, len(dense), step):
        r = dense[i:i + step]
        single[r] = tree_sum(round_sparse(a[r, :, None] * b, rnd), axis=1, rnd=rnd)
    return single


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array and, for each row, the index of its distinct row (a lexicographic
    sort column by column: much faster than ``np.unique(axis=0)``)."""
    if len(a) == 0:
        return a, np.zeros(0, np.intp)
    order = np.lexsort(a.T[::-1])
    s = a[order]
    new = np.ones(len(s), bool)
    new[1:] = np.any(s[1:] != s[:-1], axis=1)
    inverse = np.empty(len(a), np.intp)
    inverse[order] = np.cumsum(new) - 1
    return s[new], inverse


def hardmax(scores: np.ndarray) -> np.ndarray:
    """One-hot at the first (oldest) maximal score: a strict rule, exact in any precision."""
    out = np.zeros_like(scores)
    np.put_along_axis(out, scores.argmax(-1)[..., None], 1.0, axis=-1)
    return out


def weights64(model: CompiledTransformer) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in model.weights.items()}


def projections(w: dict[str, np.ndarray], rnd: Round) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token id: the query q = E W_Q (V,), the key content E W_K (V,) and the value E W_V (V, |Λ|)."""
    return (matmul(w["embed"], w["w_q"], rnd)[:, 0], matmul(w["embed"], w["w_k"], rnd)[:, 0],
            matmul(w["embed"], w["w_v"], rnd))


def scores(q: np.ndarray, keys: np.ndarray, bias: np.ndarray | float, rnd: Round) -> np.ndarray:
    """score_j = q_cur (k_j + rpe(i - j)): q (B,), keys (B, n) key contents, bias (n,) the RPE by position."""
    return rnd(q[:, None] * rnd(keys + bias))


def attend(att: np.ndarray, values: np.ndarray, rnd: Round) -> np.ndarray:
    """The head's output Σ_j a_j v_j: att (B, n), values (B, n, |Λ|)."""
    if rnd is identity:
        return np.einsum("bw,bwc->bc", att, values)
    return tree_sum(round_sparse(att[..., None] * values, rnd), axis=1, rnd=rnd)


def ffn(w: dict[str, np.ndarray], x_cur: np.ndarray, head: np.ndarray, rnd: Round) -> np.ndarray:
    """x = x_cur + head W_O (residual);  logits = (ReLU(x W1 + b1) W2) U (no residual into the logits; the
    factored output layer of :mod:`.compile`)."""
    xs = round_sparse(x_cur + matmul(head, w["w_o"], rnd), rnd)
    h = np.maximum(round_sparse(matmul(xs, w["w1"], rnd) + w["b1"], rnd), 0)
    return matmul(matmul(h, w["w2"], rnd), w["unembed"], rnd)


def network_logits(model: CompiledTransformer, windows: np.ndarray, rnd: Round | None = None,
                   beta: float | None = None) -> np.ndarray:
    """Logits for the token after each window. ``windows``: (B, W) token ids, oldest first, current last.

    x_j = E[t_j];  score_j = q_cur * (x_j W_K + rpe(W-1-j));  a = hardmax(score) (softmax(beta*score));
    x = x_cur + (Σ_j a_j x_j W_V) W_O;  logits = (ReLU(x W1 + b1) W2) U.

    Without ``rnd`` and ``beta`` this is exact integer arithmetic carried in float64 (BLAS speed): weights and
    inputs are small integers, so every product and partial sum is an integer far below 2^53, exact in any
    summation order, with or without FMA, on any BLAS or CPU.
    """
    rnd = rnd or identity
    w = weights64(model)
    windows = np.asarray(windows)
    n = windows.shape[1]
    # query/key/value projections depend on the token id only: computed (and rounded) once per id, gathered
    q_of, k_of, v_of = projections(w, rnd)
    bias = model.rpe_by_offset(np.arange(n - 1, -1, -1)).astype(np.float64)  # offsets W-1 .. 0
    s = scores(q_of[windows[:, -1]], k_of[windows], bias, rnd)
    if beta is None:
        att = hardmax(s)
    else:
        e = np.exp(beta * (s - s.max(-1, keepdims=True)))
        att = rnd(e / e.sum(-1, keepdims=True))
    return ffn(w, w["embed"][windows[:, -1]], attend(att, v_of[windows], rnd), rnd)
