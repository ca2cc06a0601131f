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
