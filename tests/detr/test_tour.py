import importlib
from pathlib import Path

import pytest


def test_tour_at_toy_scale_writes_tables_and_figures(tmp_path, monkeypatch):
    """The tour's code path end to end, shrunk (the real one is slow-marked below)."""
    tourstep = importlib.import_module("attnlab.detr.tourstep")
    monkeypatch.setattr(tourstep, "TOUR_DATA", {"n_train": 16, "n_val": 4, "image_size": 32, "max_size": 14})
    monkeypatch.setattr(tourstep, "TOUR_TRAIN", {"epochs": 2, "eval_every": 1, "batch_size": 8, "image_size": 32,
                                                "model": {"d_model": 32, "num_queries": 8}})
    monkeypatch.setattr(tourstep, "TOUR_JOBS", 1)
    from attnlab.detr import tour

    rec = tour(tmp_path, seed=0)
    assert rec.status == "ok" and {"baseline_AP", "dac_AP", "dac_step_time_ratio"} <= set(rec.metrics)
    assert [t.title.split()[0] for t in rec.tables] == ["COCO", "Queries"]
    for fig in rec.figures:
        assert Path(fig.path).stat().st_size > 5_000


@pytest.mark.slow
def test_full_tour(tmp_path):
    """The detr tour as `attnlab tour --only detr` runs it (about 3-5 minutes on 2 cores)."""
    from attnlab.tour import run_tour

    result = run_tour(tmp_path, seed=0, only=["detr"])
    assert result["status"] == {"detr": "ok"}
    assert (tmp_path / "detr" / "detections.png").stat().st_size > 10_000
