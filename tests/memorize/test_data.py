import numpy as np
import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.memorize.data import IGNORE, lowrank_tokens, make_data, random_tokens


def test_random_last_shapes_labels_and_distinct_inputs():
    d = random_tokens(50, 3, vocab=5, n_classes=4, seed=1)
    assert d.tokens.shape == (50, 3) and d.targets.shape == (50, 3)
    assert (d.targets[:, :-1] == IGNORE).all() and d.targets[:, -1].min() >= 0 and d.targets[:, -1].max() < 4
    assert len({tuple(r) for r in d.tokens.tolist()}) == 50
    assert d.n_targets == 50


def test_seeded():
    a, b, c = (random_tokens(20, 4, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.tokens, c.tokens)


def test_every_is_teacher_forced_sequence_memorization():
    d = random_tokens(10, 6, vocab=16, n_classes=16, target="every", seed=0)
    assert torch.equal(d.tokens[:, 1:], d.targets[:, :-1])  # the input at t+1 is the target at t
    assert len(set(d.tokens[:, 0].tolist())) == 10           # one distinct key per example
    assert d.n_targets == 60


def test_all_distinct_inputs_can_be_used():
    d = random_tokens(16, 2, vocab=4, seed=0)
    assert len({tuple(r) for r in d.tokens.tolist()}) == 16


@pytest.mark.parametrize("rank", [1, 2, 3, 5, 8])
def test_lowrank_has_exact_rank(rank):
    d = lowrank_tokens(64, 4, rank, vocab=16, n_classes=8, seed=rank)
    assert np.linalg.matrix_rank(d.logits) == rank
    assert torch.equal(d.targets[:, -1], torch.as_tensor(d.logits.argmax(1)))


def test_rank_one_labels_take_at_most_two_values():
    d = lowrank_tokens(100, 4, 1, seed=0)
    assert len(set(d.targets[:, -1].tolist())) <= 2


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_pairs=17, seq_len=2, vocab=4), "distinct inputs"),
    (dict(n_pairs=20, seq_len=3, vocab=16, n_classes=8, target="every"), "distinct key"),
    (dict(n_pairs=8, seq_len=3, vocab=4, n_classes=8, target="every"), "at most vocab"),
    (dict(n_pairs=32, seq_len=4, rank=9), "above the dimension"),
    (dict(n_pairs=32, seq_len=4, rank=2, target="every"), "last position"),
    (dict(n_pairs=0, seq_len=4), "positive"),
    (dict(n_pairs=4, seq_len=4, target="middle"), "unknown target"),
])
def test_impossible_settings_are_one_line_errors(kwargs, words):
    with pytest.raises(AttnlabError) as e:
        make_data(**kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)
