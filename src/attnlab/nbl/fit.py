"""The LMMSE affine map that replaces attention (brief §1.2): W = C_AX C_XX^{-1}, b = mu_A - W mu_X."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class AffineMap:
    """A = W X + b for one layer, with its calibration error."""

    layer: int
    weight: np.ndarray  # (d, d), float64
    bias: np.ndarray    # (d,), float64
    mse: float          # calibration E||A - (W X + b)||^2 of this map
    nmse: float         # mse / tr(C_YY)
    ridge: float        # the ridge actually used (absolute)


def fit_affine(layer: int, mean_x: np.ndarray, mean_a: np.ndarray, cxx: np.ndarray, cxa: np.ndarray,
               caa: np.ndarray, ridge: float = 0.0) -> AffineMap:
    """Solve (C_XX + lambda I) W^T = C_XA in float64 (lambda = ridge * tr(C_XX) / d).

    A singular C_XX (a Cholesky failure) gets a ridge of 1e-8 * tr(C_XX)/d with a warning, never a silent
    garbage solve.
    """
    d = cxx.shape[0]
    scale = np.trace(cxx) / d
    lam = ridge * scale
    try:
        chol = np.linalg.cholesky(cxx + lam * np.eye(d))
    except np.linalg.LinAlgError:
        lam = max(lam, 1e-8 * scale)
        warnings.warn(f"layer {layer}: C_XX is singular; fitting with ridge {lam:.3g}", RuntimeWarning, stacklevel=2)
        chol = np.linalg.cholesky(cxx + lam * np.eye(d))
    wt = np.linalg.solve(chol.T, np.linalg.solve(chol, cxa))  # (C_XX + lam I)^{-1} C_XA = W^T
    weight = wt.T
    bias = mean_a - weight @ mean_x
    mse = float(max(np.trace(caa) - 2 * np.trace(weight @ cxa) + np.trace(weight @ cxx @ weight.T), 0.0))
    cyy_trace = np.trace(cxx) + 2 * np.trace(cxa) + np.trace(caa)
    return AffineMap(layer, weight, bias, mse, mse / max(cyy_trace, np.finfo(float).tiny), lam)


def affine_error(m: AffineMap, mean_x: np.ndarray, mean_a: np.ndarray, cxx: np.ndarray, cxa: np.ndarray,
                 caa: np.ndarray) -> float:
    """E||A - (W X + b)||^2 of map ``m`` under the moments of (X, A) (covariance part plus the mean offset)."""
    w = m.weight
    offset = mean_a - w @ mean_x - m.bias
    return float(np.trace(caa) - 2 * np.trace(w @ cxa) + np.trace(w @ cxx @ w.T) + offset @ offset)
