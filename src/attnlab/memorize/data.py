"""Seeded datasets for exact memorization (Wang & Lin 2025, abstract: "a finite dataset").

A dataset is ``n_pairs`` input sequences of ``seq_len`` tokens with integer targets; positions that are
not targets hold :data:`IGNORE`. Two target layouts:

- ``"last"``: one random label in ``[0, n_classes)`` read at the last position (sequence classification);
- ``"every"``: sequence memorization. Each example starts with its own key token and the model must
  produce ``seq_len`` random tokens after it; the input at position t+1 is the target at t (teacher
  forcing), so greedy decoding from the key regenerates the whole sequence when memorized. This is the
  token-level problem with ``n_pairs * seq_len`` labelled points, the K of the main theorem's bound.

Low-rank data (abstract: "intrinsic low-rank structure"): labels are the argmax of logits that are a
rank-``rank`` linear function of the one-hot input, so the logit matrix has exactly that rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import AttnlabError, require

IGNORE = -100  # targets at non-target positions (the cross-entropy ignore index, as in HF)


@dataclass
class MemorizeData:
    """Inputs, targets and how they were made. ``logits`` is the label logit matrix of low-rank data."""

    tokens: torch.Tensor   # (n_pairs, seq_len) int64 in [0, vocab)
    targets: torch.Tensor  # (n_pairs, seq_len) int64 in [0, n_classes) or IGNORE
    vocab: int
    n_classes: int
    target: str
    rank: int | None = None
    logits: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


def _distinct_sequences(rng: np.random.Generator, n_pairs: int, seq_len: int, vocab: int) -> np.ndarray:
    """``n_pairs`` distinct uniform random sequences (rejection of duplicates; needs n_pairs <= vocab**seq_len)."""
    require(n_pairs <= vocab ** seq_len,
            f"n_pairs={n_pairs} is larger than the {vocab}**{seq_len}={vocab ** seq_len} distinct inputs "
            f"(raise --vocab or --seq-len)")
    seen: set[tuple[int, ...]] = set()
    rows: list[np.ndarray] = []
    while len(rows) < n_pairs:
        for row in rng.integers(0, vocab, size=(n_pairs - len(rows), seq_len)):
            key = tuple(row.tolist())
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return np.stack(rows)


def _check_sizes(n_pairs: int, seq_len: int, vocab: int, n_classes: int) -> None:
    for name, value in (("n_pairs", n_pairs), ("seq_len", seq_len), ("vocab", vocab), ("n_classes", n_classes)):
        require(isinstance(value, int) and value >= 1, f"{name} must be a positive integer, got {value!r}")
    require(n_classes >= 2, f"n_classes must be at least 2, got {n_classes}")


def random_tokens(n_pairs: int, seq_len: int, vocab: int = 64, n_classes: int = 8, target: str = "last",
                  seed: int = 0) -> MemorizeData:
    """Random distinct token sequences with uniformly random labels (``target`` is "last" or "every")."""
    _check_sizes(n_pairs, seq_len, vocab, n_classes)
    rng = np.random.default_rng(seed)
    if target == "last":
        tokens = _distinct_sequences(rng, n_pairs, seq_len, vocab)
        targets = np.full((n_pairs, seq_len), IGNORE, dtype=np.int64)
        targets[:, -1] = rng.integers(0, n_classes, size=n_pairs)
    elif target == "every":
        # Generated tokens are fed back as inputs, so labels must be tokens; one key token per example
        # keeps prefixes distinct (two examples sharing a prefix could not continue differently).
        require(n_classes <= vocab, f"target='every' feeds labels back as tokens: n_classes={n_classes} "
                                    f"must be at most vocab={vocab}")
        require(n_pairs <= vocab, f"n_pairs={n_pairs} is larger than the vocab={vocab} distinct key tokens "
                                  f"that target='every' needs (raise --vocab)")
        keys = rng.permutation(vocab)[:n_pairs]
        targets = rng.integers(0, n_classes, size=(n_pairs, seq_len))
        tokens = np.concatenate([keys[:, None], targets[:, :-1]], axis=1)
    else:
        raise AttnlabError(f"unknown target layout {target!r} (use 'last' or 'every')")
    return MemorizeData(torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long),
                        vocab, n_classes, target)


def lowrank_tokens(n_pairs: int, seq_len: int, rank: int, vocab: int = 64, n_classes: int = 8,
                   seed: int = 0) -> MemorizeData:
    """Labels at the last position from logits ``onehot(x) @ U @ W`` with U: (seq_len*vocab, rank),
    W: (rank, n_classes) Gaussian, so the (n_pairs, n_classes) logit matrix has rank exactly ``rank``."""
    _check_sizes(n_pairs, seq_len, vocab, n_classes)
    require(isinstance(rank, int) and rank >= 1, f"rank must be a positive integer, got {rank!r}")
    limit = min(n_pairs, n_classes, seq_len * vocab)
    require(rank <= limit, f"rank={rank} is above the dimension of the logit matrix "
                           f"(min(n_pairs, n_classes, seq_len*vocab) = {limit})")
    rng = np.random.default_rng(seed)
    tokens = _distinct_sequences(rng, n_pairs, seq_len, vocab)
    onehot = np.zeros((n_pairs, seq_len * vocab))
    onehot[np.arange(n_pairs)[:, None], np.arange(seq_len) * vocab + tokens] = 1.0
    logits = onehot @ rng.standard_normal((seq_len * vocab, rank)) @ rng.standard_normal((rank, n_classes))
    targets = np.full((n_pairs, seq_len), IGNORE, dtype=np.int64)
    targets[:, -1] = logits.argmax(axis=1)
    return MemorizeData(torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long),
                        vocab, n_classes, "last", rank=rank, logits=logits)


def make_data(n_pairs: int, seq_len: int, vocab: int = 64, n_classes: int = 8, target: str = "last",
              rank: int | None = None, seed: int = 0) -> MemorizeData:
    """One entry point for the CLI and sweeps: low-rank when ``rank`` is given, else random labels."""
    if rank is None:
        return random_tokens(n_pairs, seq_len, vocab, n_classes, target, seed)
    require(target == "last", "low-rank data reads its label at the last position (use target='last')")
    return lowrank_tokens(n_pairs, seq_len, rank, vocab, n_classes, seed)
