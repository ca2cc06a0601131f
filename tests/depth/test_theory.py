import math

import pytest

from attnlab.core.errors import AttnlabError
from attnlab.depth import theory


@pytest.mark.parametrize("depth, width", [(6, 215), (12, 300), (18, 419), (24, 585), (30, 816), (36, 1138),
                                          (48, 2215)])
def test_fit_reproduces_the_papers_widths(depth, width):
    assert round(theory.optimal_width(depth)) == width
    assert theory.optimal_depth(theory.optimal_width(depth)) == pytest.approx(depth)


def test_fit_at_one_trillion_and_gpt3():
    L = theory.fit_depth_for_budget(1e12)
    assert L == pytest.approx(94.7, abs=0.1)  # "about 95 layers"; the blog rounds to 92 x 30K
    assert theory.optimal_width(L) == pytest.approx(29.7e3, rel=0.01)
    L = theory.fit_depth_for_budget(12 * 96 * 12288 ** 2)  # GPT-3 175B's own budget
    assert round(L) == 80 and theory.optimal_width(L) == pytest.approx(13.4e3, rel=0.01)
    assert theory.optimal_depth(768) == pytest.approx(28.9, abs=0.05)  # NeoBERT's 28 layers at width 768


def test_budget_round_trip_and_monotone():
    sizes = [theory.optimal_params(L) for L in range(1, 100)]
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False))
    for L in (3.5, 12.0, 60.0):
        assert theory.fit_depth_for_budget(theory.optimal_params(L)) == pytest.approx(L, rel=1e-9)
    # embeddings make the same budget buy a smaller shape
    assert theory.fit_depth_for_budget(1e8, per_width=50257) < theory.fit_depth_for_budget(1e8)
    with pytest.raises(AttnlabError):
        theory.solve_budget(1.0, lambda L: (L, 3.0 ** L), 1.0, 10.0)


def test_threshold_and_regimes():
    assert theory.threshold_depth(27) == pytest.approx(3)
    assert theory.regime(2, 27) == "depth-efficient" and theory.regime(3, 27) == "depth-inefficient"
    assert theory.efficient_budget_limit(6) == pytest.approx(38e6, rel=0.01)  # v1 Table 1 reading


@pytest.mark.parametrize("depth, width, rank", [(1, 5, 6), (2, 4, 70), (3, 4, 2380), (2, 2, 15), (3, 3, 560),
                                                (4, 2, 861)])
def test_closed_form(depth, width, rank):
    assert theory.separation_rank(depth, width) == rank
    assert math.exp(theory.log_separation_rank(depth, width)) == pytest.approx(rank, rel=1e-9)


@pytest.mark.parametrize("depth, width", [(2, 2000), (3, 20000), (8, 20), (10, 30)])
def test_asymptotic_forms_match_in_their_regime(depth, width):
    exact = math.log(theory.separation_rank(depth, width))
    assert theory.log_separation_rank_asymptotic(depth, width) == pytest.approx(exact, rel=0.01)


def test_width_to_match_shows_the_two_regimes():
    # depth-efficient: removing one layer from 3 x 64 costs 127x width; depth-inefficient: 6 x 64 only 2.2x
    assert theory.width_to_match(3, 64, 2) == 8147
    assert theory.width_to_match(3, 64, 1) == theory.separation_rank(3, 64) - 1
    assert theory.width_to_match(6, 64, 5) == 141 and theory.width_to_match(6, 64, 4) == 1319
    assert theory.width_to_match(6, 16, 5) == 25 and theory.width_to_match(6, 16, 7) == 13
    w = theory.width_to_match(6, 64, 5)
    assert theory.separation_rank(5, w) >= theory.separation_rank(6, 64) > theory.separation_rank(5, w - 1)
