"""An unlimited, seeded synthetic language: a two-level (topic x state) hidden Markov model.

Every token comes from a hidden pair (topic z, state s). The topic is long-range: it is kept from one token to the
next with probability ``1 - switch`` and redrawn uniformly otherwise (it lasts ``1 / switch`` tokens on average);
the state is local syntax: ``s' ~ A_z'[s]``, and the token ``x ~ E_z'[s']``. The rows of A and E are Dirichlet
draws (``transition_concentration``, ``emission_concentration``) from the grammar's ``seed``, so a small
concentration makes each topic's vocabulary and each state's successors sparse. A model can only predict well by
inferring the topic from the window so far: the structure reaches across the whole context.

Windows are drawn on the fly (each from the chain's stationary distribution), so a sweep never repeats data; the
training stream of model seed k and the held-out windows come from separate seed sequences. Because the
generator is known, :func:`bayes_loss` gives the best achievable loss on the held-out windows exactly (the forward
algorithm: the true conditional ``p(x_t | x_<t)`` within each window), and :func:`unigram_entropy` the loss of the
best context-free predictor; every trained model's loss lies above the first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

from ..core.errors import AttnlabError, refuse_unknown_keys

#: Seed-sequence stream ids: the training windows of each model seed, and the one held-out set.
TRAIN_STREAM, HELDOUT_STREAM = 0, 1


@dataclass(frozen=True)
class HMMSpec:
    """The grammar: vocabulary, topics x states, topic switch rate, Dirichlet concentrations, seed."""

    vocab: int = 512
    topics: int = 16
    states: int = 16
    switch: float = 1 / 64
    transition_concentration: float = 0.1
    emission_concentration: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab", "topics", "states"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 2):
                raise AttnlabError(f"hmm: {name} must be an integer >= 2, got {value!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise AttnlabError(f"hmm: seed must be a non-negative integer, got {self.seed!r}")
        for name, lo, hi in (("switch", 0.0, 1.0), ("transition_concentration", 0.0, math.inf),
                             ("emission_concentration", 0.0, math.inf)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and lo < value < hi):
                raise AttnlabError(f"hmm: {name} must be a number in ({lo}, {hi}), got {value!r}")


def hmm_spec(options: Any) -> HMMSpec:
    """The :class:`HMMSpec` of a config's ``hmm`` mapping (unknown keys are a one-line error)."""
    if not isinstance(options, dict):
        raise AttnlabError(f"hmm must be a mapping of grammar settings, got {options!r}")
    refuse_unknown_keys(options, {f.name for f in fields(HMMSpec)}, "hmm")
    return HMMSpec(**options)


class HierarchicalHMM:
    """The grammar of ``spec`` (drawn once from ``spec.seed``): samplers and the exact best loss."""

    def __init__(self, spec: HMMSpec):
        self.spec = spec
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 7]))
        z, s, v = spec.topics, spec.states, spec.vocab
        self.A = rng.dirichlet(np.full(s, spec.transition_concentration), size=(z, s))  # A[z, s, s']
        self.E = rng.dirichlet(np.full(v, spec.emission_concentration), size=(z, s))  # E[z, s', x]
        self._a_cum = _offset_cumulative(self.A)
        self._e_cum = _offset_cumulative(self.E)

    @property
    def vocab(self) -> int:
        return self.spec.vocab

    @cached_property
    def transition(self) -> np.ndarray:
        """The flat chain over K = topics x states (index z * states + s): ``T[(z,s), (z',s')]``."""
        z, s, eps = self.spec.topics, self.spec.states, self.spec.switch
        topic = (1 - eps) * np.eye(z) + eps / z  # P(z' | z)
        return (topic[:, None, :, None] * self.A.transpose(1, 0, 2)[None, :, :, :]).reshape(z * s, z * s)

    @cached_property
    def stationary(self) -> np.ndarray:
        """The stationary distribution of :attr:`transition` (power iteration to 1e-13)."""
        p = np.full(len(self.transition), 1.0 / len(self.transition))
        for _ in range(100_000):
            q = p @ self.transition
            if np.abs(q - p).max() < 1e-13:
                return q / q.sum()
            p = q
        return p / p.sum()  # pragma: no cover - the chain mixes (every topic reaches every other)

    def windows(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` windows of ``length`` tokens (int64), each started from the stationary distribution."""
        s = self.spec.states
        flat = _draw(_offset_cumulative(self.stationary[None]), np.zeros(n, dtype=np.int64), rng.random(n),
                     len(self.stationary))
        topic, state = flat // s, flat % s
        out = np.empty((n, length), dtype=np.int64)
        out[:, 0] = _draw(self._e_cum, topic * s + state, rng.random(n), self.vocab)
        for t in range(1, length):
            move = rng.random(n) < self.spec.switch
            topic = np.where(move, rng.integers(0, self.spec.topics, n), topic)
            state = _draw(self._a_cum, topic * s + state, rng.random(n), s)
            out[:, t] = _draw(self._e_cum, topic * s + state, rng.random(n), self.vocab)
        return out

    def bayes_loss(self, windows: np.ndarray) -> float:
        """Mean ``-ln p(x_t | x_0..x_{t-1})`` over positions 1.. of each window under the true grammar (the
        forward algorithm from the stationary start): the loss no model of these windows can beat."""
        emit = self.E.reshape(-1, self.vocab)  # E[(z, s), x]
        alpha = np.broadcast_to(self.stationary, (len(windows), len(self.stationary)))
        total = 0.0
        for t in range(windows.shape[1]):
            like = alpha * emit[:, windows[:, t]].T
            p = like.sum(axis=1)
            if t:
                total -= np.log(p).sum()
            alpha = (like / p[:, None]) @ self.transition
        return float(total / (len(windows) * (windows.shape[1] - 1)))

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the stationary token distribution: the best loss without context."""
        p = self.stationary @ self.E.reshape(-1, self.vocab)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self.spec)


def _offset_cumulative(p: np.ndarray) -> np.ndarray:
    """The rows of ``p`` (last axis) as one increasing array: row r's cumulative sums plus r."""
    c = np.cumsum(p.reshape(-1, p.shape[-1]), axis=-1)
    c[:, -1] = 1.0  # no draw falls past the last bucket by rounding
    return (c + np.arange(len(c))[:, None]).ravel()


def _draw(cum: np.ndarray, rows: np.ndarray, u: np.ndarray, width: int) -> np.ndarray:
    """Inverse-CDF draws: from row ``rows[i]`` of the :func:`_offset_cumulative` table at uniform ``u[i]``."""
    return (np.searchsorted(cum, rows + u, side="right") - rows * width).clip(0, width - 1)


def stream_rng(spec: HMMSpec, stream: int, seed: int = 0) -> np.random.Generator:
    """The generator of one stream: training windows of model ``seed``, or the held-out set."""
    return np.random.default_rng(np.random.SeedSequence([spec.seed, 11, stream, seed]))
