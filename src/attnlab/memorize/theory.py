"""The paper's bound and fits of measured m* (pure numpy).

Main theorem (Wang & Lin 2025, abstract): a prompt of length O~(sqrt(n_pairs * seq_len)) suffices. We
compare measured m* with c * sqrt(K) * log(K)^p, K = n_pairs * seq_len (constants and the log power are
not in the abstract, so c is fitted and p is a chosen setting), and with a free power law m* = a * K^alpha
whose exponent gets a bootstrap interval. The trade-off with T generation steps is tested as the
hypothesis m* * (T + 1) ~ const (the abstract: prompt length can be traded for generation steps; its
quantitative form is not stated there, so we test m * T ~ O~(K), T + 1 counting the forward pass itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import require


def sqrt_bound(n_pairs, seq_len, c: float = 1.0, log_power: float = 0.0) -> np.ndarray:
    """c * sqrt(K) * log(K)^p with K = n_pairs * seq_len (the shape of the main theorem's bound)."""
    K = np.asarray(n_pairs, dtype=float) * np.asarray(seq_len, dtype=float)
    return c * np.sqrt(K) * np.log(np.maximum(K, np.e)) ** log_power


def _clean(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    require(x.shape == y.shape and x.ndim == 1, "fits need two 1-D arrays of the same length")
    require(np.all(x > 0) and np.all(y > 0), "fits are in log space: every value must be positive")
    return x, y


def fit_sqrt_law(K, m_star, log_power: float = 0.0) -> float:
    """Least-squares c in log space for m* = c * sqrt(K) * log(K)^p (p fixed)."""
    K, m = _clean(K, m_star)
    return float(np.exp(np.mean(np.log(m) - np.log(sqrt_bound(K, 1.0, 1.0, log_power)))))


@dataclass
class PowerLaw:
    alpha: float                 # exponent: m* ~ a * x^alpha
    a: float
    ci: tuple[float, float]      # bootstrap interval for alpha
    n_points: int
    n_boot: int

    def __call__(self, x) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) ** self.alpha


def fit_power_law(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> PowerLaw:
    """OLS of log y on log x, with a percentile bootstrap interval for the exponent (resampling points)."""
    x, y = _clean(x, y)
    require(len(np.unique(x)) >= 2, "a power-law fit needs at least two distinct x values")
    lx, ly = np.log(x), np.log(y)
    alpha, loga = np.polyfit(lx, ly, 1)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(lx[idx])) >= 2:
            boots.append(np.polyfit(lx[idx], ly[idx], 1)[0])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) if boots else (np.nan, np.nan)
    return PowerLaw(float(alpha), float(np.exp(loga)), (float(lo), float(hi)), len(x), n_boot)


def tradeoff_products(m_star, gen_steps) -> np.ndarray:
    """m* * (T + 1) per point: constant under the hypothesised trade-off m * T ~ O~(n_pairs * seq_len)."""
    return np.asarray(m_star, dtype=float) * (np.asarray(gen_steps, dtype=float) + 1)
