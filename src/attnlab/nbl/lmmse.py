"""The LMMSE affine map that replaces attention (paper §3.1): W = C_AX C_XX^{-1}, b = mu_A - W mu_X."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..core.errors import AttnlabError

#: The ridge (relative to the median eigenvalue of C_XX) used when C_XX is singular and the user asked for less.
SINGULAR_RIDGE = 1e-8


@dataclass
class AffineMap:
    """A = W X + b for one layer, with its calibration error."""

    layer: int
    weight: np.ndarray  # (d, d), float64
    bias: np.ndarray    # (d,), float64
    mse: float          # calibration E||A - (W X + b)||^2 of this map
    nmse: float         # mse / tr(C_YY)
    ridge: float        # the ridge actually used (absolute)


def check_ridge(ridge: float) -> float:
    """``ridge`` if it is a finite number >= 0; an :class:`AttnlabError` otherwise."""
    if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge >= 0):
        raise AttnlabError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return float(ridge)


def is_singular(eigenvalues: np.ndarray) -> bool:
    """Whether a PSD matrix with these (ascending) eigenvalues is numerically rank-deficient.

    The tolerance is numpy's ``matrix_rank`` default, d * eps * lambda_max: a symmetric eigensolver is
    backward stable, so each computed eigenvalue is off by a small multiple of eps * lambda_max, and an
    eigenvalue below d * eps * lambda_max cannot be told apart from zero. Whether an exactly singular C_XX
    passes a Cholesky factorisation depends on the sign of that rounding error; this test does not.
    """
    d = len(eigenvalues)
    return bool(eigenvalues[0] <= d * np.finfo(np.float64).eps * max(eigenvalues[-1], 0.0))


def ridge_scale(eigenvalues: np.ndarray) -> float:
    """What a relative ridge multiplies: the median eigenvalue of C_XX (the mean when more than half are 0).

    Not tr(C_XX)/d: the residual stream has a few huge-variance directions (on SmolLM2 the mean eigenvalue is
    about 100x the median), so a ridge relative to the mean is not small for the typical direction.
    """
    clipped = np.maximum(eigenvalues, 0.0)
    median = float(np.median(clipped))
    return median if median > 0 else float(clipped.mean())


def fit_affine(layer: int, mean_x: np.ndarray, mean_a: np.ndarray, cxx: np.ndarray, cxa: np.ndarray,
               caa: np.ndarray, ridge: float = 0.0) -> AffineMap:
    """Solve (C_XX + lambda I) W^T = C_XA in float64 (lambda = ridge * :func:`ridge_scale`).

    A singular C_XX (see :func:`is_singular`) gets a ridge of at least ``SINGULAR_RIDGE`` times that scale with
    a warning, never a silent solve that gives W an arbitrary gain along the unconstrained directions.
    """
    ridge = check_ridge(ridge)
    eigenvalues, vectors = np.linalg.eigh((cxx + cxx.T) / 2)
    if eigenvalues[-1] <= 0:
        raise AttnlabError(f"layer {layer}: the input X is constant over the calibration tokens; no map to fit")
    scale = ridge_scale(eigenvalues)
    lam = ridge * scale
    if is_singular(eigenvalues):
        lam = max(lam, SINGULAR_RIDGE * scale)
        warnings.warn(f"layer {layer}: C_XX is singular; fitting with ridge {lam:.3g}", RuntimeWarning, stacklevel=2)
    # C_XX is PSD by construction: a negative eigenvalue is rounding, so it is clipped to 0
    wt = (vectors / (np.maximum(eigenvalues, 0.0) + lam)) @ (vectors.T @ cxa)  # (C_XX + lam I)^{-1} C_XA = W^T
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
