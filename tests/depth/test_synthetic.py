import numpy as np
import pytest

from attnlab.core.errors import AttnlabError
from attnlab.depth.synthetic import HELDOUT_STREAM, TRAIN_STREAM, HierarchicalHMM, HMMSpec, hmm_spec, stream_rng

SMALL = HMMSpec(vocab=32, topics=3, states=4, switch=0.05)


def test_streams_are_deterministic_per_seed_and_train_differs_from_heldout():
    g = HierarchicalHMM(SMALL)
    a = g.windows(16, 40, stream_rng(SMALL, TRAIN_STREAM, 0))
    assert np.array_equal(a, HierarchicalHMM(SMALL).windows(16, 40, stream_rng(SMALL, TRAIN_STREAM, 0)))
    for other in (stream_rng(SMALL, TRAIN_STREAM, 1), stream_rng(SMALL, HELDOUT_STREAM)):
        assert (g.windows(16, 40, other) != a).mean() > 0.5
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < SMALL.vocab
    assert not np.allclose(HierarchicalHMM(HMMSpec(vocab=32, topics=3, states=4, seed=1)).E, g.E)  # another grammar


def test_samples_follow_the_grammar():
    """Token frequencies of long samples match the stationary emission marginal; the flat chain is stochastic."""
    g = HierarchicalHMM(SMALL)
    assert np.allclose(g.transition.sum(axis=1), 1) and np.allclose(g.stationary @ g.transition, g.stationary)
    w = g.windows(4000, 50, stream_rng(SMALL, TRAIN_STREAM, 3))
    freq = np.bincount(w.ravel(), minlength=SMALL.vocab) / w.size
    expected = g.stationary @ g.E.reshape(-1, SMALL.vocab)
    assert np.abs(freq - expected).max() < 0.01


def test_bayes_loss_is_the_true_conditional_entropy():
    """With one topic and one state the tokens are i.i.d.: the best loss is the emission entropy; with structure,
    context helps: Bayes < unigram, and the best loss falls as the window grows."""
    iid = HierarchicalHMM(HMMSpec(vocab=16, topics=2, states=2, switch=0.5, transition_concentration=1e6,
                                  emission_concentration=1e6))
    w = iid.windows(200, 20, stream_rng(iid.spec, HELDOUT_STREAM))
    assert iid.bayes_loss(w) == pytest.approx(np.log(16), abs=1e-3)  # near-uniform rows
    g = HierarchicalHMM(SMALL)
    w = g.windows(4000, 64, stream_rng(SMALL, HELDOUT_STREAM))
    assert g.bayes_loss(w) < g.bayes_loss(w[:, :2]) - 0.1 < g.unigram_entropy() - 0.1 <= np.log(SMALL.vocab)


@pytest.mark.parametrize("options, message", [
    ({"vocab": 1}, "vocab must be an integer >= 2"), ({"topics": True}, "topics must be an integer"),
    ({"switch": 0}, r"switch must be a number in \(0.0, 1.0\)"), ({"seed": -1}, "seed must be a non-negative"),
    ({"emission_concentration": "x"}, "emission_concentration must be"), ({"bogus": 1}, "unknown key"),
    ([1], "must be a mapping")])
def test_bad_grammar_settings(options, message):
    with pytest.raises(AttnlabError, match=message):
        hmm_spec(options)
