import json

import pytest

from attnlab.core.atomic import read_jsonl
from attnlab.nbl import experiment
from attnlab.nbl.experiment import Config, perplexity_vs_layers
from attnlab.nbl.session import Calibration, Session

CALIB = Calibration(tokens=512, seq_len=32, batch_size=4)
CONFIGS = (Config("nbl", "cca"), Config("drop", "cosine"), Config("nbl", "nmse", True), Config("block", "angular"))
KEYS = [f"{c.label}@k{k}" for c in CONFIGS for k in (1, 2)]


@pytest.fixture
def session(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return Session.open(str(tiny_checkpoint))


def _grid(session, log, **kw) -> list[dict]:
    return perplexity_vs_layers(session, CALIB, 256, [1, 2], CONFIGS, log=log, progress=False, quiet=True, **kw)


def test_perplexity_grid_resumes_from_its_log(session, tmp_path, monkeypatch):
    log = tmp_path / "rows.jsonl"
    rows = _grid(session, log)
    assert [r["key"] for r in rows] == KEYS and [(r["label"], r["k"]) for r in rows] == [
        (c.label, k) for c in CONFIGS for k in (1, 2)]
    assert all(r["reference_perplexity"] == rows[0]["reference_perplexity"] for r in rows)
    assert all(len(r["layers"]) == r["k"] and r["perplexity"] > 1 for r in rows)
    assert not experiment._SHARED  # the caller's model is not kept alive by the grid
    # a second run reads every row back from the log and computes nothing
    monkeypatch.setattr("attnlab.nbl.experiment.linearize", lambda *a, **k: pytest.fail("recomputed a logged row"))
    again = _grid(session, log)
    assert again == rows == read_jsonl(log)
    # a log written before rows had keys (label and k only) resumes too: the keys are derived
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "key"}) + "\n" for r in rows))
    assert _grid(session, old) == rows


def test_an_interrupted_grid_resumes_without_recomputing(session, tmp_path, monkeypatch):
    log = tmp_path / "rows.jsonl"
    job, ran, stop = experiment.compare_job, [], [True]

    def interrupted(args):
        if len(ran) == 3 and stop[0]:  # once: Ctrl-C after three rows
            stop[0] = False
            raise KeyboardInterrupt
        ran.append(experiment.job_key(args["config"], args["k"]))
        return job(args)

    monkeypatch.setattr("attnlab.nbl.experiment.compare_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _grid(session, log)
    assert [r["key"] for r in read_jsonl(log)] == ran == KEYS[:3]
    ran.clear()
    rows = _grid(session, log)
    assert ran == KEYS[3:] and [r["key"] for r in rows] == KEYS  # only the rows not logged ran


def test_a_grid_on_ray_gives_the_local_rows(session, tmp_path, ray_local):
    local = _grid(session, tmp_path / "local.jsonl", threads=1)
    ray = _grid(session, tmp_path / "ray.jsonl", threads=1, backend="ray")
    assert [r["key"] for r in ray] == [r["key"] for r in local] == KEYS
    for a, b in zip(local, ray, strict=True):
        assert b["layers"] == a["layers"], a["key"]
        for metric in ("perplexity", "reference_perplexity", "top1_agreement"):
            assert b[metric] == pytest.approx(a[metric], rel=1e-6), (a["key"], metric)


def test_tour_commands_reproduce_its_profile():
    """Every table's command, parsed by the CLI, asks for exactly what the tour computed."""
    import shlex

    from attnlab.cli import build_parser
    from attnlab.nbl.tour import PROFILES, commands

    parser = build_parser()
    for profile in PROFILES.values():
        cmd = commands(profile)
        parsed = {name: parser.parse_args(shlex.split(line)[1:]) for name, line in cmd.items()}
        for args in (parsed["rank"], parsed["compare"], parsed["apply"]):
            assert Calibration(args.data, args.tokens, args.seq_len, args.batch_size) == profile.calibration
        assert tuple(parsed["compare"].configs) == profile.configs and tuple(parsed["compare"].layers) == profile.ks
        assert parsed["compare"].heldout_tokens == profile.heldout_tokens
        assert (parsed["apply"].layers, parsed["apply"].selector, parsed["apply"].method) == (profile.bench_layers,
                                                                                             "cca", "nbl")
        bench = parsed["bench"]
        assert bench.model == parsed["apply"].out
        assert (tuple(bench.prompt_lengths), tuple(bench.batch_sizes), bench.decode_tokens, bench.repeats) == (
            profile.prompt_lengths, profile.batch_sizes, profile.decode_tokens, profile.repeats)


@pytest.mark.slow
def test_quick_tour_on_smollm2_shows_the_papers_effect(tmp_path):
    """Needs `make models`; about 2.5 minutes on 2 free cores (the first run also converts SmolLM2)."""
    from attnlab.nbl.tour import PROFILES, tour

    rec = tour(tmp_path, seed=0)
    assert rec.status == "ok" and rec.metrics["reference_perplexity"] > 1
    for k in PROFILES["quick"].ks:  # NBL on CCA-chosen layers keeps perplexity below Attention Drop at equal k
        assert rec.metrics[f"ppl_nbl/cca_k{k}"] < rec.metrics[f"ppl_drop/cosine_k{k}"]


def test_cached_statistics_are_keyed_by_the_code_version(tiny_checkpoint, tmp_path, monkeypatch):
    """An edit to the statistics code (or other torch/transformers versions) never reuses a cached file."""
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    session = Session.open(str(tiny_checkpoint))
    calib = Calibration(tokens=256, seq_len=32, batch_size=4)
    before, _ = session.stats(calib, progress=False)
    assert session.stats(calib, progress=False)[0] is before  # the same session reuses what it has
    monkeypatch.setattr("attnlab.nbl.session.code_version", lambda: "another version")
    session.loaded.clear()
    after, _ = session.stats(calib, progress=False)
    assert after.meta["path"] != before.meta["path"] and after.meta["code_version"] == "another version"
