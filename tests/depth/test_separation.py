import numpy as np
import pytest

from attnlab.core.errors import AttnlabError
from attnlab.depth import separation as sep


@pytest.mark.parametrize("depth, width, heads, expected", [
    (1, 2, 1, 3), (1, 4, 1, 5), (1, 8, 1, 9), (1, 8, 2, 9), (1, 8, 4, 9),  # L=1: d_x + 1 for any H
    (2, 2, 1, 15), (2, 3, 1, 35), (2, 4, 1, 70), (2, 4, 2, 70), (2, 6, 3, 210),
    (3, 2, 1, 105), (3, 3, 1, 560), (4, 2, 1, 861)])
def test_exact_rank_equals_closed_form(depth, width, heads, expected):
    r = sep.exact_rank(depth, width, heads)
    assert r.rank == r.closed_form == expected
    assert r.saturated  # more templates than the rank: the rank stopped growing


def test_depth3_width4_is_2380():
    r = sep.exact_rank(3, 4, 1)
    assert r.rank == 2380 == r.closed_form


def test_head_dim_one_loses_one_and_residual_changes_nothing():
    assert sep.exact_rank(2, 4, 4).rank == 69  # H = d_x: one short of the closed form
    assert sep.exact_rank(2, 4, 1, residual=True).rank == 70
    assert sep.exact_rank(2, 3, 1, residual=True, seed=3).rank == 35


def test_rank_is_capped_by_templates_and_is_exact_mod_p():
    r = sep.exact_rank(2, 4, 1, templates=40)
    assert r.rank == 40 and not r.saturated
    # singular mod p although invertible over Q: the GF(p) rank is what we claim, a lower bound
    m = np.array([[1, 0], [0, sep.PRIME]], dtype=np.int64)
    assert sep.rank_mod_p(m) == 1
    assert sep.rank_mod_p(np.array([[1, 2], [3, 4]])) == 2


def test_network_is_exact_integer_arithmetic():
    net = sep.PolynomialSAN.random(1, 2, 1, seed=5, prime=101)
    x = np.array([[[3, 7], [11, 2]]], dtype=np.int64)
    # the layer by hand over the integers, reduced at the end
    q, k, v, o = (w[0][0].astype(object) for w in (net.q, net.k, net.v, net.o))
    xs = x[0].astype(object)
    y1 = sum(int((q @ xs[0]) @ (k @ xs[j])) * (o @ (v @ xs[j])) for j in (0, 1))
    assert int(net(x)[0]) == int(y1 @ net.readout.astype(object)) % 101


#: float64 SVD rank (rtol 1e-10) of the L=2, d_x=4 grid matrix at M=90, per block: the polynomial network's
#: closed form 70 (next singular value ~1e-18 vs ~3e-8 at 70), the softmax block full (smallest ~3e-6)
FLOAT_RANKS = {"polynomial": 70, "softmax": 90}


@pytest.mark.parametrize("block", list(sep.BLOCKS))
def test_float_ranks(block):
    n, s = sep.numerical_rank(sep.grid_matrix_float(2, 4, 1, 90, block))
    assert n == FLOAT_RANKS[block] and s[0] == pytest.approx(1)


@pytest.mark.parametrize("call, message", [
    (lambda: sep.exact_rank(2, 6, 4), "not divisible by 4 heads"),
    (lambda: sep.exact_rank(4, 4), "templates per position"),
    (lambda: sep.exact_rank(0, 4), "must be positive"),
    (lambda: sep.grid_matrix_float(1, 4, 1, 8, "relu"), "unknown block")])
def test_bad_input(call, message):
    with pytest.raises(AttnlabError, match=message):
        call()
