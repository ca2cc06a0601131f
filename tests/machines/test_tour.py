import pytest


@pytest.mark.slow
def test_tour(tmp_path):
    from attnlab.machines import tour

    rec = tour(tmp_path, seed=0)
    assert rec.metrics["library_mismatches"] == 0 and rec.metrics["min_exact_bits"] == 3
    assert abs(rec.metrics["softmax_beta_slope_vs_ln_w"] - 1) < 0.05
    assert all((tmp_path / name).is_file() for name in ("attention_bb4.png", "precision.png", "softmax_beta.png"))
