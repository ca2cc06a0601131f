"""The sweep's data sources (a registry): character-level text, or the unlimited synthetic grammar.

A source gives its vocabulary size, a training sampler per model seed (``(batch, seq_len + 1)`` windows drawn on
the CPU, so the data order is the same on every device) and one fixed set of held-out windows. ``text`` is the
character-level corpus the first sweeps used (kept bit-for-bit: same vocabulary, same draws); ``hmm`` is
:class:`attnlab.depth.synthetic.HierarchicalHMM`, never repeated and with a known best loss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ..core.errors import AttnlabError

#: A training sampler: ``draw(batch_size, seq_len)`` -> LongTensor (batch_size, seq_len + 1).
Sampler = Callable[[int, int], Any]


class CharCorpus:
    """Character-level tokens of a text source: vocabulary from the training split (+ one unknown id)."""

    def __init__(self, source: str = "builtin"):
        from ..core.text import BUILTIN, load_texts

        builtin = source == BUILTIN or source.startswith(BUILTIN + ":")  # "builtin:F" has its own held-out split
        train = "\n\n".join(load_texts(source, "calibration" if builtin else "all"))
        heldout = "\n\n".join(load_texts(source, "heldout")) if builtin else None
        if heldout is None:  # a local file: hold out its last 10%
            cut = int(0.9 * len(train))
            train, heldout = train[:cut], train[cut:]
        self.name = source
        self.chars = [c for c, _ in Counter(train).most_common()]
        index = {c: i + 1 for i, c in enumerate(self.chars)}  # 0 = unknown
        import torch

        self.train = torch.tensor([index.get(c, 0) for c in train], dtype=torch.long)
        self.heldout_tokens = torch.tensor([index.get(c, 0) for c in heldout], dtype=torch.long)

    @property
    def vocab(self) -> int:
        return len(self.chars) + 1

    def check(self, seq_len: int) -> None:
        """A split too short for one window of ``seq_len + 1`` characters is a one-line error."""
        for split, tokens in (("training", self.train), ("held-out", self.heldout_tokens)):
            if len(tokens) < seq_len + 2:
                raise AttnlabError(f"text {self.name}: its {split} split has {len(tokens)} characters, fewer than "
                                   f"one window of seq_len + 1 = {seq_len + 1} (give a longer text or lower "
                                   "seq_len)")

    def sampler(self, seed: int) -> Sampler:
        """Windows at uniform random offsets of the training split (a torch generator seeded with ``seed``)."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        last = len(self.train) - 1

        def draw(batch_size: int, seq_len: int):
            starts = torch.randint(0, last - seq_len, (batch_size,), generator=gen)
            return self.train[starts[:, None] + torch.arange(seq_len + 1)]

        return draw

    def heldout(self, seq_len: int, max_tokens: int):
        """Consecutive held-out windows of ``seq_len + 1`` (overlapping by one), ``max_tokens`` targets at most."""
        n = min(max_tokens, len(self.heldout_tokens) - 1) // seq_len
        return self.heldout_tokens[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)

    def describe(self, seq_len: int, max_tokens: int) -> dict[str, Any]:
        return {"source": "text", "text": self.name, "vocab": self.vocab}


class GrammarSource:
    """The synthetic grammar of :mod:`attnlab.depth.synthetic` as a source: unlimited, seeded streams."""

    def __init__(self, options: dict[str, Any]):
        from .synthetic import HierarchicalHMM, hmm_spec

        self.grammar = HierarchicalHMM(hmm_spec(options))
        self._bayes: dict[tuple[int, int], float] = {}

    @property
    def vocab(self) -> int:
        return self.grammar.vocab

    def check(self, seq_len: int) -> None:
        """Nothing to check: every window length is available."""

    def sampler(self, seed: int) -> Sampler:
        import torch

        from .synthetic import TRAIN_STREAM, stream_rng

        rng = stream_rng(self.grammar.spec, TRAIN_STREAM, seed)
        return lambda batch_size, seq_len: torch.from_numpy(self.grammar.windows(batch_size, seq_len + 1, rng))

    def _heldout(self, seq_len: int, max_tokens: int):
        from .synthetic import HELDOUT_STREAM, stream_rng

        rng = stream_rng(self.grammar.spec, HELDOUT_STREAM)
        return self.grammar.windows(max(1, max_tokens // seq_len), seq_len + 1, rng)

    def heldout(self, seq_len: int, max_tokens: int):
        """``max_tokens // seq_len`` windows from the held-out stream (the same for every model)."""
        import torch

        return torch.from_numpy(self._heldout(seq_len, max_tokens))

    def describe(self, seq_len: int, max_tokens: int) -> dict[str, Any]:
        """The grammar, and the two bounds of the loss on the held-out windows: the exact best achievable
        (forward algorithm) and the best context-free one (unigram entropy), nats/token."""
        key = (seq_len, max_tokens)
        if key not in self._bayes:
            self._bayes[key] = self.grammar.bayes_loss(self._heldout(seq_len, max_tokens))
        return {"source": "hmm", "hmm": self.grammar.to_dict(), "vocab": self.vocab,
                "bayes_loss": self._bayes[key], "unigram_entropy": self.grammar.unigram_entropy()}


#: source name -> how to build it from a sweep config (``text`` reads ``config.text``, ``hmm`` ``config.hmm``).
SOURCES: dict[str, Callable[[Any], Any]] = {
    "text": lambda config: CharCorpus(config.text),
    "hmm": lambda config: GrammarSource(dict(config.hmm or {})),
}

_BUILT: dict[str, Any] = {}


def data_source(config: Any):
    """The data source of a sweep ``config`` (its ``source`` and that source's options), built once per process."""
    import json

    key = json.dumps([config.source, config.text if config.source == "text" else config.hmm], sort_keys=True)
    if key not in _BUILT:
        _BUILT[key] = SOURCES[config.source](config)
    return _BUILT[key]
