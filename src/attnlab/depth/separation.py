"""Separation rank of small self-attention networks, measured: exactly over GF(p), and numerically.

The quantity computed (Levine et al. 2020, Sec. 2-3; Cohen & Shashua 2017): a network with N = 2
input positions and a scalar output ``y = r . y^{L,1}`` at position 1. Evaluate it on M template
vectors per position, giving the M x M *grid matrix* ``G[a, b] = y(x_a, x_b)``: the matricization of
the grid tensor w.r.t. the split A = {1}, B = {2}. Any decomposition ``y = sum_v g_v(x^A) g'_v(x^B)``
gives ``rank G <= sep``, so rank G is a lower bound on the separation rank, and it reaches sep for
enough generic templates.

* :func:`exact_rank`: the paper's simplified network (Sec. 2: no softmax, no normalization, no
  feed-forward; per layer ``y_i <- sum_j sum_h <Q_h y_i, K_h y_j> O_h V_h y_j``), with integer weights
  and templates, evaluated mod a prime p, rank over GF(p) by python-flint. Everything is exact, and
  ``rank_GF(p)(G mod p) <= rank_Q(G)``, so the result is a *guaranteed* lower bound on the separation
  rank of that integer network. For random weights it equals ``C((3^L-1)/2 + d_x, d_x)``.
* :func:`grid_matrix_float` + :func:`numerical_rank`: the same grid matrix in float64, for the
  simplified network and for a standard block (softmax attention, LayerNorm, ReLU feed-forward,
  residuals), where exact rank is not defined in the same way and only singular-value decay is seen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.errors import AttnlabError
from . import theory

#: A prime below 2^25: products of two residues stay below 2^50, so int64 sums of up to 2^13 terms are exact.
PRIME = 33_554_393
MAX_INNER = 2 ** 13
MAX_TEMPLATES = 3000  # M x M grid: M = 2400 takes about a minute on one core


def _check(depth: int, width: int, heads: int) -> None:
    if depth < 1 or width < 1 or heads < 1:
        raise AttnlabError(f"depth, width and heads must be positive, got L={depth}, d_x={width}, H={heads}")
    if width % heads:
        raise AttnlabError(f"width {width} is not divisible by {heads} heads (choose a multiple of the head count)")
    if width > MAX_INNER:
        raise AttnlabError(f"width {width} is above {MAX_INNER}: int64 sums mod p would overflow")


@dataclass
class PolynomialSAN:
    """The simplified network's integer weights mod p: per layer Q, K, V of shape (H, d_a, d_x), O of
    shape (H, d_x, d_a); ``readout`` r of shape (d_x,)."""

    q: list[np.ndarray]
    k: list[np.ndarray]
    v: list[np.ndarray]
    o: list[np.ndarray]
    readout: np.ndarray
    residual: bool = False
    prime: int = PRIME

    @classmethod
    def random(cls, depth: int, width: int, heads: int = 1, residual: bool = False, seed: int = 0,
               prime: int = PRIME) -> PolynomialSAN:
        _check(depth, width, heads)
        rng = np.random.default_rng(seed)
        da = width // heads
        draw = lambda *shape: rng.integers(0, prime, size=shape, dtype=np.int64)  # noqa: E731
        return cls([draw(heads, da, width) for _ in range(depth)], [draw(heads, da, width) for _ in range(depth)],
                   [draw(heads, da, width) for _ in range(depth)], [draw(heads, width, da) for _ in range(depth)],
                   draw(width), residual, prime)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs ``r . y^{L,1} mod p`` for inputs ``x`` of shape (B, N, d_x) with entries in [0, p)."""
        p, y = self.prime, x % self.prime
        for wq, wk, wv, wo in zip(self.q, self.k, self.v, self.o, strict=True):
            # (B, H, N, d_a) projections, reduced mod p after every product (sec. 2, eq. for y^{l,i})
            q, k, v = (np.einsum("bnx,hax->bhna", y, w) % p for w in (wq, wk, wv))
            scores = np.einsum("bhia,bhja->bhij", q, k) % p
            mixed = np.einsum("bhij,bhja->bhia", scores, v) % p
            out = np.einsum("hxa,bhia->bix", wo, mixed) % p
            y = (out + y) % p if self.residual else out
        return (y[:, 0, :] @ self.readout) % p


def exact_grid(net: PolynomialSAN, templates_a: np.ndarray, templates_b: np.ndarray, chunk: int = 128) -> np.ndarray:
    """``G[a, b] = y(x_a, x_b) mod p`` over all template pairs (rows A = position 1, columns B = position 2)."""
    ma, mb = len(templates_a), len(templates_b)
    out = np.empty((ma, mb), dtype=np.int64)
    for s in range(0, ma, chunk):
        xa = templates_a[s:s + chunk]
        pairs = np.stack([np.repeat(xa, mb, axis=0), np.tile(templates_b, (len(xa), 1))], axis=1)
        out[s:s + len(xa)] = net(pairs).reshape(len(xa), mb)
    return out


def rank_mod_p(matrix: np.ndarray, prime: int = PRIME) -> int:
    """Exact rank of an integer matrix over GF(prime) (python-flint ``nmod_mat``)."""
    import flint

    rows, cols = matrix.shape
    return int(flint.nmod_mat(rows, cols, (np.asarray(matrix) % prime).ravel().tolist(), prime).rank())


@dataclass
class RankResult:
    depth: int
    width: int
    heads: int
    templates: int
    residual: bool
    rank: int
    closed_form: int
    seconds: float

    @property
    def saturated(self) -> bool:
        """True when the rank is below the template count, so more templates would not raise it."""
        return self.rank < self.templates

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saturated": self.saturated, "matches_closed_form": self.rank == self.closed_form}


def exact_rank(depth: int, width: int, heads: int = 1, templates: int | None = None, residual: bool = False,
               seed: int = 0, prime: int = PRIME) -> RankResult:
    """Exact GF(p) rank of the simplified network's M x M grid matrix (a lower bound on its separation
    rank). ``templates`` defaults to the closed form + 8, enough to see it saturate."""
    _check(depth, width, heads)
    closed = theory.separation_rank(depth, width)
    m = templates if templates is not None else closed + 8
    if m < 1:
        raise AttnlabError(f"templates must be positive, got {m}")
    if m > MAX_TEMPLATES:
        raise AttnlabError(f"L={depth}, d_x={width} needs {m} templates per position (closed form {closed}), above "
                           f"the limit {MAX_TEMPLATES}: choose smaller depth/width or pass fewer --templates")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    net = PolynomialSAN.random(depth, width, heads, residual, seed, prime)
    xa, xb = (rng.integers(0, prime, size=(m, width), dtype=np.int64) for _ in range(2))
    rank = rank_mod_p(exact_grid(net, xa, xb), prime)
    return RankResult(depth, width, heads, m, residual, rank, closed, round(time.perf_counter() - t0, 3))


def _attention(h, w, heads: int, softmax: bool):
    """Multi-head attention over (B, N, d) with fresh weights from ``w``; without softmax the scores are the
    raw bilinear forms <Q y_i, K y_j> of the paper's Sec. 2."""
    import torch

    width = h.shape[-1]
    da = width // heads
    wq, wk, wv, wo = w(heads, da, width), w(heads, da, width), w(heads, da, width), w(heads, width, da)
    q, k, v = (torch.einsum("bnx,hax->bhna", h, m) for m in (wq, wk, wv))
    scores = q @ k.transpose(-1, -2)
    if softmax:
        scores = torch.softmax(scores / da ** 0.5, dim=-1)
    return torch.einsum("hxa,bhia->bix", wo, scores @ v)


def _polynomial_layer(y, w, heads: int):
    """Levine et al. Sec. 2: no softmax, no normalization, no feed-forward; a cubic polynomial of y."""
    return _attention(y, w, heads, softmax=False)


def _standard_layer(y, w, heads: int):
    """A pre-LN block: softmax attention and a ReLU feed-forward of width 4 d, LayerNorm, residuals."""
    import torch

    norm = lambda z: torch.nn.functional.layer_norm(z, z.shape[-1:])  # noqa: E731
    y = y + _attention(norm(y), w, heads, softmax=True)
    width = y.shape[-1]
    return y + torch.relu(norm(y) @ w(4 * width, width).T) @ w(width, 4 * width).T


#: The float64 networks :func:`grid_matrix_float` can build: block name -> one layer.
BLOCKS = {"polynomial": _polynomial_layer, "softmax": _standard_layer}


def grid_matrix_float(depth: int, width: int, heads: int = 1, templates: int = 64, block: str = "softmax",
                      seed: int = 0) -> np.ndarray:
    """The M x M grid matrix in float64 of a depth-``depth`` stack of ``BLOCKS[block]`` layers (Gaussian
    weights scaled by 1/sqrt(fan-in)): "polynomial" is the paper's simplified network, "softmax" a
    standard block, where exact rank is not defined the same way and only singular-value decay is seen."""
    import torch

    _check(depth, width, heads)
    if block not in BLOCKS:
        raise AttnlabError(f"unknown block {block!r} (use {' or '.join(BLOCKS)})")
    g = torch.Generator().manual_seed(seed)
    w = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) / s[-1] ** 0.5  # noqa: E731
    xa = torch.randn(templates, width, generator=g, dtype=torch.float64)
    xb = torch.randn(templates, width, generator=g, dtype=torch.float64)
    y = torch.stack([xa.repeat_interleave(templates, 0), xb.repeat(templates, 1)], dim=1)  # (M*M, 2, d)
    for _ in range(depth):
        y = BLOCKS[block](y, w, heads)
    r = torch.randn(width, generator=g, dtype=torch.float64)
    return (y[:, 0, :] @ r).reshape(templates, templates).numpy()


def numerical_rank(matrix: np.ndarray, rtol: float = 1e-10) -> tuple[int, np.ndarray]:
    """(number of singular values above ``rtol`` x the largest, the normalized singular values)."""
    s = np.linalg.svd(matrix, compute_uv=False)
    s = s / s[0] if s[0] > 0 else s
    return int((s > rtol).sum()), s


#: The table of ``attnlab depth rank`` (and of the tour).
RANK_TITLE = "Exact GF(p) rank of the grid matrix (N=2, split {1},{2}) of the softmax-free network"
RANK_COLUMNS = ["L", "d_x", "H", "M", "exact rank", "C((3^L-1)/2+d_x,d_x)", "match", "regime", "s"]


def rank_rows(results: list[RankResult]) -> list[list[Any]]:
    return [[r.depth, r.width, r.heads, r.templates, r.rank, r.closed_form, r.rank == r.closed_form,
             theory.regime(r.depth, r.width), r.seconds] for r in results]
