"""The per-layer selectors of NBL and its baselines, as pure float64 functions of the covariances.

Notation (paper §3): X is the residual stream entering a layer, A the attention output before the residual
add, Y = X + A. Every score is "lower = more replaceable". The ``*_of`` functions score one layer's
:class:`~attnlab.nbl.stats.LayerStats`; :data:`attnlab.nbl.registry.SELECTORS` names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .stats import LayerStats


def inv_sqrt_psd(c: np.ndarray, floor: float) -> np.ndarray:
    """C^{-1/2} of a symmetric PSD matrix, eigenvalues floored at ``floor * max eigenvalue``."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    w = np.maximum(w, floor * max(w.max(), np.finfo(float).tiny))
    return (v / np.sqrt(w)) @ v.T


def canonical_correlations(cxx: np.ndarray, cxy: np.ndarray, cyy: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """Singular values of the whitened cross-covariance K = C_YY^{-1/2} C_YX C_XX^{-1/2}, clipped to [0, 1]."""
    k = inv_sqrt_psd(cyy, floor) @ cxy.T @ inv_sqrt_psd(cxx, floor)
    return np.clip(np.linalg.svd(k, compute_uv=False), 0.0, 1.0)


def cca_score(cxx: np.ndarray, cxa: np.ndarray, caa: np.ndarray, floor: float = 1e-10) -> float:
    """The paper's bound (Thm 3.2): sum_i (1 - rho_i^2) for X vs Y = X + A.

    0 when Y is an exact linear function of X; at most d.
    """
    cxy = cxx + cxa
    cyy = cxx + cxa + cxa.T + caa
    rho = canonical_correlations(cxx, cxy, cyy, floor)
    return float(np.sum(1.0 - rho**2))


def lmmse_error(cxx: np.ndarray, cxa: np.ndarray, caa: np.ndarray) -> float:
    """MSE* = tr(C_AA - C_AX C_XX^{-1} C_XA), the error of the best affine map X -> A (paper Prop. 3.1)."""
    sol = np.linalg.lstsq(cxx, cxa, rcond=None)[0]  # C_XX^{-1} C_XA, robust to a singular C_XX
    return float(max(np.trace(caa) - np.trace(cxa.T @ sol), 0.0))


def nmse_score(cxx: np.ndarray, cxa: np.ndarray, caa: np.ndarray) -> float:
    """The LMMSE error relative to the residual stream: MSE* / tr(C_YY). By the paper's bound it is at most
    the CCA score (``MSE* <= tr(C_YY) * S``)."""
    cyy_trace = np.trace(cxx) + 2 * np.trace(cxa) + np.trace(caa)
    return lmmse_error(cxx, cxa, caa) / max(cyy_trace, np.finfo(float).tiny)


def cosine_score(mean_cos_attention: float) -> float:
    """Attention Drop (He et al.): importance = 1 - mean cos(h, h + A)."""
    return 1.0 - mean_cos_attention


def bi_score(mean_cos_block: float) -> float:
    """ShortGPT block influence (Men et al.): BI = 1 - mean cos(h_l, h_{l+1})."""
    return 1.0 - mean_cos_block


def cca_of(st: LayerStats) -> float:
    return cca_score(*st.covariances())


def nmse_of(st: LayerStats) -> float:
    return nmse_score(*st.covariances())


def cosine_of(st: LayerStats) -> float:
    return cosine_score(st.mean_cos_attention)


def bi_of(st: LayerStats) -> float:
    return bi_score(st.mean_cos_block)


def angular_of(st: LayerStats) -> float:
    """Gromov et al.'s angular distance of the one-block run: from the block's input to its output."""
    return float(st.mean_angular[-1])


def rank_layers(scores: dict[int, float], k: int) -> list[int]:
    """The ``k`` layers with the lowest score (ties broken by layer index), in ascending score order."""
    return [layer for layer, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))][:k]
