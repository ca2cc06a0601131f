import pytest

from attnlab.memorize import tour
from attnlab.memorize.sweep import build, expand


@pytest.mark.parametrize("profile", sorted(tour.CONFIGS))
def test_each_profile_is_a_valid_sweep_with_an_expected_duration(profile):
    for points in expand(tour.CONFIGS[profile]).values():
        for settings in points:
            build(settings)
    assert tour.EXPECTED_SECONDS[profile] > 0


def test_the_quick_profile_is_the_n_pairs_experiment_of_the_full_one():
    quick, full = expand(tour.CONFIGS["quick"]), expand(tour.CONFIGS["full"])
    assert list(quick) == ["n_pairs"] and quick["n_pairs"] == full["n_pairs"]


@pytest.mark.slow
def test_the_quick_tour_shows_m_star_growing_with_n_pairs(tmp_path):
    """About a minute. 8x the data needs a longer prompt by a wide margin (measured m* 1 -> 11), whatever
    the rounding of the machine does to single fits near m*."""
    rec = tour.tour(tmp_path, seed=0)
    m_star = rec.metrics["m_star_by_n_pairs"]
    assert m_star["4"] is not None and m_star["32"] is not None and m_star["32"] > 2 * m_star["4"]
    assert rec.config["profile"] == "quick" and rec.command == "attnlab tour --only memorize --seed 0"
    assert (tmp_path / "mstar_vs_K.png").is_file()
