"""The closed certificate: every step of every run of a compiled network, at every window W >= 1, exact in
exact arithmetic and in p-bit arithmetic (paper brief §2.5, lemmas B and C; issue 17, item 3).

A step's logits are :func:`~.network.network_logits` on the last W tokens. Its stages reduce every window to
a finite set of classes, each evaluated here through the same code (exact, or rounded after every operation):

* **Scores.** score_j = rnd(q(t_cur) * rnd(k(t_j) + rpe(W-1-j))) depends on the position only through the
  RPE's value there. The RPE (``CompiledTransformer.rpe_by_offset``) is the closed form rpe[current] at
  offset 0, rpe[oldest] at offset W-1, rpe[intermediate] in between. So over *all* windows of length W the
  oldest key is the unique maximum iff, for every current token c,
  min_t score(c, t, oldest) > max(max_t score(c, t, b) for each intermediate value b, score(c, c, current)):
  a V x V check per RPE value (lemma B at W, evaluated with the RPE values at W's offsets). For W = 1 the
  only key is the oldest; W = 2 has no intermediate position; every W >= 3 has the same set of RPE values
  as W = 3. Lemma B for every W >= 1 is therefore the check at W = 2 and W = 3 (with the RPE at the compiled
  W checked to be that closed form). The maximum is required to be strict, so any tie rule (and a softmax
  steep enough, :mod:`.softmax`) reads the oldest token.
* **Head.** With a one-hot attention at the oldest position the head is the tree sum of rnd(1 v_old) and
  W - 1 zeros: evaluated at the compiled W for every front class, and W-free when rnd(v + 0) = v (then
  every level of the tree returns the same value).
* **Values.** The value of a front token depends only on its symbol (checked on every token), so the
  front classes are the |Λ| symbols.
* **FFN (lemma C).** The network on every (current token, front symbol) pair must give the token τ(state,
  symbol) as a unique argmax, and no logit (all zero) for halting tokens, which are terminal.

Together: the next token of any window, at any W, is table[current][front symbol] = τ; by induction
(lemma D) every run is exact. The precision certificate repeats the whole check with every operation
rounded to a p-bit format and states the smallest p at which some format passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .compile import CompiledTransformer
from .network import Format, Round, attend, ffn, formats_of, identity, projections, scores, weights64

#: the largest p the precision certificate tries
MAX_BITS = 8


@dataclass(frozen=True)
class Certificate:
    """The closed certificate of one compiled network in one arithmetic (exact, or a p-bit format)."""

    window: int
    arithmetic: str  # "exact" or a Format name
    pairs: int  # (current token, front symbol) pairs evaluated
    mismatches: int  # pairs whose argmax is not τ
    min_margin: float  # smallest (top logit - runner-up) over non-halting pairs: > 0 means a unique argmax
    terminal_ok: bool  # halting tokens produce no logits (no unit fires): the executor stops there
    lemma_b_gap: float  # smallest (oldest score - best other score) over every window at W (> 0: lemma B)
    lemma_b_all_gap: float  # the same over every window of every length W >= 1
    rpe_closed_form: bool  # the RPE at the compiled W is rpe[current | intermediate | oldest] by offset
    value_by_symbol: bool  # a token's value depends only on its symbol
    head_window_free: bool  # the head of a one-hot attention is the same value at every W
    table: np.ndarray = field(repr=False)  # (V, |Λ|) next token, -1 for halting tokens
    precision: tuple[dict, ...] = ()  # per p-bit format tried: {"format", "bits", "complete", ...}
    smallest_bits: int | None = None  # smallest p with a complete rounded certificate (None: not searched/found)

    @property
    def lemma_b(self) -> bool:
        return self.lemma_b_gap > 0

    @property
    def lemma_b_all_windows(self) -> bool:
        return self.lemma_b_all_gap > 0 and self.rpe_closed_form

    @property
    def ffn_exact(self) -> bool:
        return self.mismatches == 0 and self.min_margin > 0 and self.terminal_ok

    @property
    def complete(self) -> bool:
        """Every part holds: every step of every run is exact at every window W >= 1."""
        return (self.ffn_exact and self.lemma_b and self.lemma_b_all_windows and self.value_by_symbol
                and self.head_window_free)

    def failures(self) -> list[str]:
        """What does not hold, in words (empty when complete)."""
        checks = [(self.lemma_b, f"lemma B fails at W={self.window} (a key other than the oldest wins, gap "
                                 f"{self.lemma_b_gap:g})"),
                  (self.lemma_b_all_windows, "lemma B fails for some W >= 1 (gap over all windows "
                                             f"{self.lemma_b_all_gap:g}, RPE closed form {self.rpe_closed_form})"),
                  (self.value_by_symbol, "a token's value depends on more than its symbol"),
                  (self.head_window_free, "the attention head's output changes with W"),
                  (self.mismatches == 0, f"{self.mismatches} (token, front) pairs give a token other than τ"),
                  (self.min_margin > 0, f"the argmax is not unique (margin {self.min_margin:g})"),
                  (self.terminal_ok, "a halting token produces logits")]
        return [msg for ok, msg in checks if not ok]

    def summary(self) -> dict:
        out = {"window": self.window, "arithmetic": self.arithmetic, "complete": self.complete,
               "valid_windows": "every W >= 1" if self.complete else "none", "pairs": self.pairs,
               "mismatches": self.mismatches, "min_margin": self.min_margin, "terminal_ok": self.terminal_ok,
               "lemma_b": self.lemma_b, "lemma_b_all_windows": self.lemma_b_all_windows,
               "lemma_b_gap": self.lemma_b_gap, "lemma_b_all_gap": self.lemma_b_all_gap,
               "rpe_closed_form": self.rpe_closed_form, "value_by_symbol": self.value_by_symbol,
               "head_window_free": self.head_window_free, "failures": self.failures()}
        if self.precision:
            out["precision"] = list(self.precision)
            out["smallest_bits"] = self.smallest_bits
        return out


def _rpe_bias(model: CompiledTransformer, window: int) -> np.ndarray:
    """The RPE value at each window position, oldest first (offsets W-1 .. 0)."""
    return model.with_window(window).rpe_by_offset(np.arange(window - 1, -1, -1)).astype(np.float64)


def _lemma_b_gap(bias: np.ndarray, q: np.ndarray, k: np.ndarray, rnd: Round) -> float:
    """Smallest (oldest score - best other score) over every window with these RPE values and every token
    in every position: one V x V score matrix per distinct RPE value (inf for a window of one)."""
    if len(bias) == 1:
        return float("inf")
    keys = np.broadcast_to(k, (len(q), len(k)))
    by_value = {float(b): scores(q, keys, b, rnd) for b in np.unique(bias)}
    weakest_oldest = by_value[float(bias[0])].min(1)
    rivals = [by_value[float(bias[-1])][np.arange(len(q)), np.arange(len(q))]]  # the current token's own key
    rivals += [by_value[float(b)].max(1) for b in np.unique(bias[1:-1])]
    return float((weakest_oldest - np.max(rivals, axis=0)).min())


def _closed_form(model: CompiledTransformer) -> bool:
    """The RPE at the compiled W is rpe[current] at offset 0, rpe[oldest] at W-1, rpe[intermediate] between."""
    W, rpe = model.window, model.weights["rpe"].astype(np.float64)
    want = np.full(W, rpe[1])
    want[0], want[-1] = rpe[0], rpe[2]  # offsets 0 (current) .. W-1 (oldest); W = 1: the oldest
    return bool(np.array_equal(model.rpe_by_offset(np.arange(W)).astype(np.float64), want))


def _head(values: np.ndarray, window: int, rnd: Round) -> np.ndarray:
    """The head's output when the attention is one-hot at the oldest of ``window`` keys, per value row."""
    att = np.zeros((1, window))
    att[0, 0] = 1.0
    return np.concatenate([attend(att, np.broadcast_to(v, (1, window, len(v))), rnd) for v in values])


def _check(model: CompiledTransformer, rnd: Round, arithmetic: str) -> Certificate:
    pm, n_sym, vocab, W = model.pm, model.n_symbols, model.vocab_size, model.window
    w = weights64(model)
    q, k, v = projections(w, rnd)
    gap_w = _lemma_b_gap(_rpe_bias(model, W), q, k, rnd)
    gap_all = min(_lemma_b_gap(_rpe_bias(model, n), q, k, rnd) for n in (1, 2, 3))
    value_by_symbol = bool(np.array_equal(v, v[np.arange(vocab) % n_sym]))  # token c = (symbol c, state 0)
    head = _head(v[:n_sym], W, rnd)
    head_one = _head(v[:n_sym], 1, rnd)
    head_free = bool(np.array_equal(head, head_one) and np.array_equal(rnd(head_one + 0.0), head_one))
    cur = np.repeat(np.arange(vocab), n_sym)
    front = np.tile(np.arange(n_sym), vocab)
    logits = ffn(w, w["embed"][cur], head[front], rnd)
    nxt = logits.argmax(-1)
    top = np.sort(logits, axis=-1)
    margin = top[:, -1] - top[:, -2]
    halting_states = pm.halting
    halting = np.array([t // n_sym in halting_states for t in cur])
    expected = np.array([-1 if h else (lambda s, c: s * n_sym + c)(*pm.delta[(t // n_sym, f)])
                         for t, f, h in zip(cur, front, halting, strict=True)])
    live = ~halting
    return Certificate(
        window=W, arithmetic=arithmetic, pairs=len(cur), mismatches=int(np.sum(nxt[live] != expected[live])),
        min_margin=float(margin[live].min()) if live.any() else 0.0,
        terminal_ok=bool(np.all(logits[halting] == 0)), lemma_b_gap=gap_w, lemma_b_all_gap=gap_all,
        rpe_closed_form=_closed_form(model), value_by_symbol=value_by_symbol, head_window_free=head_free,
        table=np.where(halting, -1, nxt).reshape(vocab, n_sym))


def certify(model: CompiledTransformer, fmt: Format | None = None, precision: bool = False,
            max_bits: int = MAX_BITS) -> Certificate:
    """The closed certificate of ``model`` in exact arithmetic (or in ``fmt``). With ``precision``, also the
    precision certificate: the same check in every p-bit format for p = 2, 3, ... up to ``max_bits``, stopping
    at the smallest p where some format passes (``smallest_bits``; every format tried is in ``precision``)."""
    cert = _check(model, fmt.rounder() if fmt else identity, fmt.name if fmt else "exact")
    if not precision:
        return cert
    rows, smallest = [], None
    for bits in range(2, max_bits + 1):
        for f in formats_of(bits):
            c = _check(model, f.rounder(), f.name)
            rows.append({"format": f.name, "bits": bits, "exp_bits": f.exp_bits, "man_bits": f.man_bits,
                         "complete": c.complete, "mismatches": c.mismatches, "lemma_b": c.lemma_b_all_windows,
                         "failures": c.failures()})
            smallest = bits if c.complete and smallest is None else smallest
        if smallest is not None:
            break
    return replace(cert, precision=tuple(rows), smallest_bits=smallest)
