import pytest

from attnlab.machines.tour import EXPECTED_SECONDS, PROFILES, tour


def test_profiles_have_expected_seconds():
    assert set(PROFILES) == set(EXPECTED_SECONDS) == {"quick", "full"}


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True])
def test_tour(tmp_path, full):
    rec = tour(tmp_path, seed=0, full=full)
    assert rec.config["profile"] == ("full" if full else "quick")
    assert rec.metrics["library_mismatches"] == 0 and rec.metrics["min_exact_bits"] == 3
    assert abs(rec.metrics["softmax_beta_slope_vs_ln_w"] - 1) < 0.05
    assert all((tmp_path / name).is_file() for name in ("attention_bb4.png", "precision.png", "softmax_beta.png"))
    assert all(t.command == rec.command for t in rec.tables) and all(f.command == rec.command for f in rec.figures)
