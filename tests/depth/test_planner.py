import pytest

from attnlab.core.errors import AttnlabError
from attnlab.depth.model import GPT
from attnlab.depth.params import Architecture, count, gpt2_like, known
from attnlab.depth.planner import COUNTINGS, Counting, assess, known_models, laws_rows, plan, size


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
    assert size(r.depth, r.width, 32000, family="gpt") == r.count == pytest.approx(125e6, rel=0.1)  # snapped to 64
    assert r.count == count(gpt2_like(r.depth, r.width, 32000, 0))["total"]
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
    (dict(budget=1e6, seq_len=128), "give --vocab"), (dict(budget=1e6, vocab=0), "--vocab"),
    (dict(budget=1e6, family="mamba"), "unknown --family"),
    (dict(budget=1e6, vocab=100, seq_len=8, family="llama"), "a Llama block has none")])
def test_bad_input(kwargs, message):
    with pytest.raises(AttnlabError, match=message):
        plan(**kwargs)


def test_rows_are_exact_counts_of_the_template_and_the_paper_keeps_its_row():
    for family in ("gpt", "llama"):
        p = plan(2e6, family=family, width_multiple=16)
        for r in p.rows:
            if r.depth is None:
                continue
            assert r.kaplan == 12 * r.depth * r.width ** 2
            assert r.count == Counting(family).exact(r.depth, r.width)
        paper = row(p, "levine_fit_12Ld2")
        assert paper.kaplan == pytest.approx(2e6, rel=0.25) and paper.count == Counting(family).exact(paper.depth,
                                                                                                      paper.width)
    gpt = row(plan(2e6, width_multiple=16), "levine_fit")  # the project's GPT, counted by building it
    assert GPT(10, 8, gpt.depth, gpt.width, 1).non_embedding_parameters() == gpt.count
    llama = Counting("llama").exact(4, 96)  # SwiGLU 8d/3 = 256 (multiple of 256), no biases, untied head
    assert llama == count(Architecture("x", "llama", 4, 96, 1, 0, 1, 1, 256, False, head_dim=96))["non_embedding"]
    assert "levine_fit_12Ld2" not in {r.rule for r in plan(2e6, family="kaplan").rows}
    assert set(COUNTINGS) == {"gpt", "llama", "kaplan"}
    # with embeddings the exact count and 12 L d^2 part ways: the fit's depth moves with the convention
    a, b = row(plan(1e6, vocab=256, width_multiple=8), "levine_fit"), row(plan(1e6, vocab=256, width_multiple=8,
                                                                                family="kaplan"), "levine_fit")
    assert a.count == count(gpt2_like(a.depth, a.width, 256, 0))["total"] and b.count == size(b.depth, b.width, 256)


def test_shapes_among_the_laws():
    gpt3 = assess(96, 12288, count(known("GPT-3 175B"))["non_embedding"])
    assert gpt3["verdict"] == "too deep" and gpt3["past_too_deep"] and gpt3["regime"] == "depth-inefficient"
    assert gpt3["fit_params_at_depth"] == pytest.approx(1.16e12, rel=0.01)  # "needs 96 layers only at 1.16T"
    assert gpt3["threshold_depth"] == pytest.approx(8.57, abs=0.01) and gpt3["in_kaplan_band"]
    bert = assess(12, 768)
    assert not bert["past_too_deep"] and bert["verdict"] == "too shallow" and bert["in_kaplan_band"]
    assert assess(2, 16)["regime"] == "depth-efficient" and not assess(4, 16)["in_kaplan_band"]  # d/L = 4
    text = " ".join(str(c) for r in laws_rows(gpt3, assess(96, 12288)) for c in r)
    assert "past the fit's too-deep boundary" in text and "80.5 x 134" in text and "MobileLLM-1.5B" in text


def test_known_models_at_their_exact_counts():
    models = {m["name"]: m for m in known_models()}
    gemma = models["Gemma-7B"]  # its 8d feed-forward: exact N is 2.4x its 12 L d^2
    assert gemma["non_embedding"] == count(known("Gemma-7B"))["non_embedding"] > 2 * gemma["kaplan"]
    assert gemma["fit_depth"] > gemma["fit_depth_12Ld2"] + 5
    assert models["GPT-3 175B"]["verdict_12Ld2"] == "too deep"
    assert models["MobileLLM-350M"]["verdict"] == "near the fit"
