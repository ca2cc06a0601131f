from pathlib import Path

import pytest

from attnlab.detr import tour as tour_module

TOY = {"data": {"n_train": 16, "n_val": 4, "image_size": 32, "max_size": 14},
       "train": {"epochs": 2, "eval_every": 1, "batch_size": 8, "image_size": 32,
                 "model": {"d_model": 32, "num_queries": 8}}}


@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
def test_tour_at_toy_scale_writes_tables_and_figures(tmp_path, monkeypatch, full):
    """The tour's code path end to end with both profiles shrunk (the real one is slow-marked below)."""
    monkeypatch.setattr(tour_module, "PROFILES", {"quick": TOY, "full": TOY})
    monkeypatch.setattr(tour_module, "JOBS", 1)
    rec = tour_module.tour(tmp_path, seed=0, full=full)
    assert rec.status == "ok" and {"baseline_AP", "dac_AP", "dac_step_time_ratio"} <= set(rec.metrics)
    assert rec.config["profile"] == ("full" if full else "quick")
    assert rec.command == "attnlab tour --only detr" + (" --full" if full else "")
    assert [t.title.split()[0] for t in rec.tables] == ["COCO", "Queries", "Queries"]
    assert rec.metrics["baseline_parameters"] == rec.metrics["dac_parameters"]         # DAC adds no parameters
    assert [row[:2] for row in rec.tables[2].rows] == [["baseline", "O-decoder"], ["baseline", "C-decoder"],
                                                       ["dac", "O-decoder"], ["dac", "C-decoder"]]
    for fig in rec.figures:
        assert Path(fig.path).stat().st_size > 5_000


def test_expected_seconds_cover_both_profiles():
    assert set(tour_module.EXPECTED_SECONDS) == set(tour_module.PROFILES) == {"quick", "full"}


@pytest.mark.slow
def test_quick_tour(tmp_path):
    """The detr tour as `attnlab tour --only detr` runs it (about a minute on 2 cores)."""
    from attnlab.tour import run_tour

    result = run_tour(tmp_path / "report", seed=0, only=["detr"], quiet=True)
    assert result["status"] == {"detr": "ok"}
    assert (tmp_path / "report" / "detr" / "detections.png").stat().st_size > 10_000
