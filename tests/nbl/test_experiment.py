import pytest

from attnlab.core.atomic import read_jsonl
from attnlab.nbl.experiment import Config, perplexity_vs_layers
from attnlab.nbl.session import Calibration, Session


def test_perplexity_grid_resumes_from_its_log(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    session = Session.open(str(tiny_checkpoint))
    calib = Calibration(tokens=512, seq_len=32, batch_size=4)
    configs = (Config("nbl", "cca"), Config("drop", "cosine"), Config("nbl", "nmse", True))
    log = tmp_path / "grid.jsonl"
    rows = perplexity_vs_layers(session, calib, 256, [1, 2], configs, log=log, progress=False)
    assert [(r["label"], r["k"]) for r in rows] == [(c.label, k) for c in configs for k in (1, 2)]
    assert all(r["reference_perplexity"] == rows[0]["reference_perplexity"] for r in rows)
    assert all(len(r["layers"]) == r["k"] and r["perplexity"] > 1 for r in rows)
    # a second run reads every row back from the log and computes nothing
    monkeypatch.setattr("attnlab.nbl.experiment.linearize", lambda *a, **k: pytest.fail("recomputed a logged row"))
    again = perplexity_vs_layers(session, calib, 256, [1, 2], configs, log=log, progress=False)
    assert again == rows == read_jsonl(log)


@pytest.mark.slow
def test_tour_on_smollm2(tmp_path):
    """Needs `make models`; about 5 minutes on 2 free cores."""
    from attnlab.nbl import tour

    rec = tour(tmp_path, seed=0)
    assert rec.status == "ok" and rec.metrics["reference_perplexity"] > 1
    assert rec.metrics["ppl_nbl/cosine_k4"] < rec.metrics["ppl_drop/cosine_k4"]
