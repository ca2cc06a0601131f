import numpy as np
import pytest

from attnlab.core.errors import AttnlabError
from attnlab.memorize.theory import fit_power_law, fit_sqrt_law, sqrt_bound, tradeoff_products


def test_sqrt_bound_shape():
    assert sqrt_bound(16, 4, c=2.0) == pytest.approx(16.0)
    assert sqrt_bound(64, 16, c=1.0, log_power=1.0) == pytest.approx(32 * np.log(1024))


def test_fit_sqrt_law_recovers_c():
    n = np.array([16, 32, 64, 128, 256, 512])
    K = n * 8
    for p in (0.0, 1.0):
        m = sqrt_bound(n, 8, c=0.7, log_power=p)
        assert fit_sqrt_law(K, m, log_power=p) == pytest.approx(0.7)


def test_power_law_recovers_exponent_with_an_interval():
    rng = np.random.default_rng(0)
    K = np.repeat(np.geomspace(64, 8192, 8), 3)
    m = 0.05 * K ** 0.8 * np.exp(rng.normal(0, 0.1, K.size))
    law = fit_power_law(K, m, n_boot=500, seed=1)
    assert law.alpha == pytest.approx(0.8, abs=0.05)
    assert law.ci[0] < 0.8 < law.ci[1] and law.ci[1] - law.ci[0] < 0.2
    assert law(K).shape == K.shape
    exact = fit_power_law(K, 3 * K ** 0.5, n_boot=50)
    assert exact.alpha == pytest.approx(0.5) and exact.a == pytest.approx(3.0)
    assert exact.ci == pytest.approx((0.5, 0.5))


def test_fits_reject_bad_input():
    with pytest.raises(AttnlabError, match="positive"):
        fit_power_law([1, 2, 3], [1, 0, 2])
    with pytest.raises(AttnlabError, match="two distinct"):
        fit_power_law([4, 4], [1, 2])


def test_tradeoff_products():
    assert tradeoff_products([12, 6, 4], [0, 1, 2]).tolist() == [12, 12, 12]
