"""The NBL math on synthetic data: moments, LMMSE recovery, the CCA bound."""

import warnings

import numpy as np
import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.nbl.lmmse import fit_affine
from attnlab.nbl.registry import SELECTORS
from attnlab.nbl.scores import cca_score, lmmse_error, nmse_score, rank_layers
from attnlab.nbl.stats import LayerStats, unit_rows


def _stats(x, a, batch=37):
    st = LayerStats(x.shape[1])
    for i in range(0, len(x), batch):
        st.update(torch.from_numpy(x[i:i + batch]), torch.from_numpy(a[i:i + batch]))
    return st


def _affine_data(rng, n=2000, d=8, noise=0.0, offset=50.0):
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + offset  # a large mean, as in real residual streams
    w = rng.normal(size=(d, d))
    b = rng.normal(size=d)
    a = x @ w.T + b + noise * rng.normal(size=(n, d))
    return x, a, w, b


def test_streamed_moments_equal_direct_covariances():
    rng = np.random.default_rng(0)
    x, a, _, _ = _affine_data(rng, noise=1.0)
    cxx, cxa, caa = _stats(x, a).covariances()
    full = np.cov(np.hstack([x, a]).T)
    np.testing.assert_allclose(cxx, full[:8, :8], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cxa, full[:8, 8:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(caa, full[8:, 8:], rtol=1e-9, atol=1e-9)


def test_exact_recovery_of_w_and_b():
    rng = np.random.default_rng(1)
    x, a, w, b = _affine_data(rng)
    st = _stats(x, a)
    m = fit_affine(0, st.mean_x.numpy(), st.mean_a.numpy(), *st.covariances())
    np.testing.assert_allclose(m.weight, w, atol=1e-7)
    np.testing.assert_allclose(m.bias, b, atol=1e-5)
    assert m.mse < 1e-10


def test_cca_score_zero_for_affine_and_grows_with_noise():
    scores = []
    for noise in (0.0, 0.3, 1.0, 3.0, 10.0):
        x, a, _, _ = _affine_data(np.random.default_rng(2), noise=noise)
        scores.append(cca_score(*_stats(x, a).covariances()))
    assert scores[0] < 1e-6
    assert all(s1 < s2 for s1, s2 in zip(scores, scores[1:], strict=False)), scores
    assert scores[-1] <= 8  # at most d


@pytest.mark.parametrize("seed", range(5))
def test_lmmse_error_is_bounded_by_cca_score(seed):
    """MSE* <= tr(C_YY) * sum(1 - rho^2) (the CCA bound, paper Theorem 3.2), i.e. nmse <= cca."""
    rng = np.random.default_rng(seed)
    x, a, _, _ = _affine_data(rng, noise=rng.uniform(0.1, 5))
    a = a + np.tanh(x) * 3  # and a non-linear part
    cxx, cxa, caa = _stats(x, a).covariances()
    cyy = cxx + cxa + cxa.T + caa
    assert lmmse_error(cxx, cxa, caa) <= np.trace(cyy) * cca_score(cxx, cxa, caa) + 1e-9
    assert nmse_score(cxx, cxa, caa) <= cca_score(cxx, cxa, caa)


def _singular_x(kind: str, rng) -> np.ndarray:
    """Inputs whose C_XX is exactly singular: a duplicated channel, a channel that is a combination of two
    others, or fewer tokens than channels (d = 17 so that the tolerance d * eps * lambda_max is several
    times the eigensolver's rounding error, whatever its sign)."""
    if kind == "fewer tokens":
        return rng.normal(size=(12, 17)) * 3 + 20
    x = rng.normal(size=(500, 16)) * rng.uniform(0.5, 3, size=16) + 50
    extra = x[:, :1] if kind == "duplicate" else 0.25 * x[:, :1] + 2.0 * x[:, 1:2]
    return np.hstack([x, extra])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["duplicate", "combination", "fewer tokens"])
def test_singular_cxx_warns_and_uses_a_ridge(kind, seed):
    rng = np.random.default_rng(seed)
    x = _singular_x(kind, rng)
    a = x @ rng.normal(size=(17, 17)).T
    st = _stats(x, a)
    with pytest.warns(RuntimeWarning, match="singular"):
        m = fit_affine(0, st.mean_x.numpy(), st.mean_a.numpy(), *st.covariances())
    assert m.ridge > 0 and m.nmse < 1e-6 and np.isfinite(m.weight).all()


def test_well_conditioned_cxx_fits_without_a_ridge():
    rng = np.random.default_rng(4)
    x, a, _, _ = _affine_data(rng, d=17)
    st = _stats(x, a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fit_affine(0, st.mean_x.numpy(), st.mean_a.numpy(), *st.covariances())
    assert m.ridge == 0


def test_the_ridge_is_relative_to_the_median_eigenvalue_not_the_mean():
    """A residual stream with two huge-variance directions (as SmolLM2's): the mean eigenvalue is ~1000x the
    median, and a relative ridge of 0.1 must be 0.1 of the typical direction's variance."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2000, 16)) * np.r_[np.full(14, 1.0), 300.0, 300.0]
    a = x @ rng.normal(size=(16, 16)).T
    st = _stats(x, a)
    cxx = st.covariances()[0]
    eigenvalues = np.linalg.eigvalsh(cxx)
    m = fit_affine(0, st.mean_x.numpy(), st.mean_a.numpy(), *st.covariances(), ridge=0.1)
    assert m.ridge == pytest.approx(0.1 * np.median(eigenvalues), rel=1e-9)
    assert np.trace(cxx) / 16 > 100 * np.median(eigenvalues)


@pytest.mark.parametrize("ridge", [float("nan"), float("inf"), -1.0])
def test_bad_ridge_is_refused(ridge):
    rng = np.random.default_rng(5)
    x, a, _, _ = _affine_data(rng)
    st = _stats(x, a)
    with pytest.raises(AttnlabError, match="ridge must be a finite number >= 0"):
        fit_affine(0, st.mean_x.numpy(), st.mean_a.numpy(), *st.covariances(), ridge=ridge)


@pytest.mark.parametrize("selector", SELECTORS)
def test_every_registered_selector_scores_a_layer(selector):
    rng = np.random.default_rng(6)
    x, a, _, _ = _affine_data(rng, noise=1.0)
    st = _stats(x, a)
    st.update_block(torch.from_numpy(x + a), unit_rows(torch.from_numpy(x), x.shape[1])[None], [0])  # layer 0's run
    assert np.isfinite(SELECTORS[selector].resolve()(st))


def test_rank_layers_orders_by_score_then_index():
    assert rank_layers({0: 0.5, 1: 0.1, 2: 0.1, 3: 0.9}, 3) == [1, 2, 0]
