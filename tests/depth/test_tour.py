import pytest


@pytest.mark.slow
def test_tour_renders(tmp_path):
    """The full depth tour (about 3 minutes on 2 shared cores)."""
    from attnlab.tour import run_tour

    result = run_tour(tmp_path, seed=0, only=["depth"])
    assert result["status"] == {"depth": "ok"}
    html = (tmp_path / "index.html").read_text()
    assert html.count("<img") == 3 and "Exact GF(p) rank" in html
    for png in ("frontier.png", "separation.png", "sweep/sweep.png"):
        assert (tmp_path / "depth" / png).stat().st_size > 10_000
