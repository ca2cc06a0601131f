import pytest

from attnlab.core.errors import AttnlabError
from attnlab.depth.planner import assess, known_models, plan, size


def row(p, rule):
    return next(r for r in p.rows if r.rule == rule)


def test_one_trillion():
    r = row(plan(1e12), "levine_fit")
    assert r.depth == 95 and r.width == pytest.approx(29.7e3, rel=0.01)
    assert r.count == pytest.approx(1e12, rel=0.01) and "extrapolated" in r.note


def test_rows_spend_the_budget():
    p = plan(1.3e9)
    for r in p.rows:
        if r.depth is not None:
            assert r.count == pytest.approx(1.3e9, rel=0.1), r.rule
    assert row(p, "mobilellm").depth > row(p, "levine_fit").depth > row(p, "levine_threshold").depth
    lo, hi = row(p, "kaplan_band").depth_range
    assert lo < row(p, "levine_fit").depth < hi
    assert row(plan(1e8), "mobilellm").depth is None  # outside the released configs


def test_vocab_counts_the_embedding_and_warns():
    p = plan(125e6, vocab=32000)
    r = row(p, "levine_fit")
    assert size(r.depth, r.width, 32000) == r.count == pytest.approx(125e6, rel=0.1)  # width snapped to 64
    assert r.depth < row(plan(125e6), "levine_fit").depth  # the embedding takes its share
    assert any("Wies" in w for w in plan(1e9, vocab=256).warnings)
    assert not plan(1e9, vocab=50257).warnings


@pytest.mark.parametrize("depth, width, L_star, verdict", [
    (12, 768, 23, "too shallow"), (24, 1024, 32, "too shallow"), (24, 1536, 37, "too shallow"),
    (24, 2048, 42, "too shallow"), (32, 2560, 47, "too shallow"), (32, 4096, 54, "too shallow"),
    (40, 5140, 60, "too shallow"), (96, 12288, 80, "too deep")])
def test_gpt3_against_the_fit(depth, width, L_star, verdict):
    a = assess(depth, width)
    assert round(a["fit_depth"]) == L_star and a["verdict"] == verdict


def test_known_models_listed():
    names = {m["name"] for m in known_models()}
    assert {"BERT-base", "GPT-2", "GPT-3 175B", "Llama-2 7B", "MobileLLM-1B"} <= names


@pytest.mark.parametrize("kwargs, message", [
    (dict(budget=100), "too small for any depth"), (dict(budget=-5), "positive"),
    (dict(budget=1e6, seq_len=128), "give --vocab"), (dict(budget=1e6, vocab=0), "--vocab")])
def test_bad_input(kwargs, message):
    with pytest.raises(AttnlabError, match=message):
        plan(**kwargs)
