"""Finite precision: the paper's constant-precision claim and the softmax ablation.

- The precision sweep: the closed certificate (:mod:`.certificate`, exhaustive, every operation rounded to
  a p-bit :class:`~.network.Format`) of the binary counter compiled at several W.
- Teacher-forced checks: the network's next token on every window of an exact run, so one pass
  over a run's windows proves the softmax network would generate the same run (the softmax ablation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .certificate import certify
from .compile import CompiledTransformer, compile_pm
from .executors import TableExecutor
from .library import library_machine
from .network import Format, network_logits
from .post import tm_to_pm
from .simulate import token_marks


def teacher_forced_errors(model: CompiledTransformer, stream: np.ndarray, rnd: Callable | None = None,
                          beta: float | None = None, starts: np.ndarray | None = None,
                          chunk_elems: int = 4_000_000) -> int:
    """How many windows of an exact token ``stream`` (prompt first) the network gets wrong: the logits'
    argmax must be the next token of the stream, unique. ``starts``: the windows to check (default all)."""
    W = model.window
    starts = np.arange(len(stream) - W) if starts is None else np.asarray(starts)
    errors = 0
    step = max(1, chunk_elems // (W * 8))
    for i in range(0, len(starts), step):
        idx = starts[i:i + step, None] + np.arange(W)
        logits = network_logits(model, stream[idx], rnd=rnd, beta=beta)
        want = stream[starts[i:i + step] + W]
        top = logits.max(1)
        errors += int(np.sum((logits.argmax(1) != want) | ((logits == top[:, None]).sum(1) > 1)))
    return errors


def min_beta(model: CompiledTransformer, stream: np.ndarray, starts: np.ndarray | None = None,
             hi: float = 64.0, tol: float = 0.01) -> float:
    """Smallest softmax inverse temperature (to ``tol``) at which every window of ``stream`` is exact."""
    lo = 0.0
    if teacher_forced_errors(model, stream, beta=hi, starts=starts):
        return float("inf")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if teacher_forced_errors(model, stream, beta=mid, starts=starts):
            lo = mid
        else:
            hi = mid
    return hi


def bcount_stream(window: int, n_tokens: int) -> tuple[CompiledTransformer, np.ndarray]:
    """The compiled binary counter on '#0^(W-1)' (space exactly W + 1 cells) and its first ``n_tokens``
    exact tokens after the prompt, from the certified table executor."""
    tm = library_machine("bcount")
    tr = tm_to_pm(tm)
    model = compile_pm(tr.pm, window)
    state, queue = tr.initial_config(tm.encode("#" + "0" * (window - 1)), window)
    prompt = model.prompt(state, queue)
    ex = TableExecutor(model, prompt, token_marks(tr, model))
    out = list(prompt)
    while len(out) < window + n_tokens and not ex.halted:
        ex.advance(1, 1)  # one token
        out.append(ex.cur)
    return model, np.array(out)


def window_sample(n_tokens: int, limit: int) -> np.ndarray:
    """At most ``limit`` window starts spread over a run prefix, always including the first ones."""
    return np.unique(np.linspace(0, n_tokens - 1, min(limit, n_tokens)).astype(int))


def precision_sweep(windows: list[int], formats: list[Format]) -> list[dict]:
    """For each W and format: the closed certificate of bcount compiled at W with every operation rounded
    (all (token, front symbol) pairs, lemma B over every window of every length; not a sample)."""
    pm = tm_to_pm(library_machine("bcount")).pm
    rows = []
    for W in windows:
        model = compile_pm(pm, W)
        for f in formats:
            cert = certify(model, f)
            rows.append({"window": W, "format": f.name, "bits": f.bits, "pairs": cert.pairs,
                         "complete": cert.complete, "mismatches": cert.mismatches,
                         "lemma_b": cert.lemma_b and cert.lemma_b_all_windows,
                         "model_bits_at_p": model.params * f.bits})
    return rows


def softmax_sweep(windows: list[int], limit: int = 128) -> list[dict]:
    """Minimal softmax inverse temperature keeping bcount '#0^(W-1)' exact, against ln(W - 1)."""
    rows = []
    for W in windows:
        n = 2 * W + 16
        model, stream = bcount_stream(W, n)
        beta = min_beta(model, stream, starts=window_sample(n, limit))
        rows.append({"window": W, "min_beta": round(beta, 3), "ln_w_minus_1": round(float(np.log(W - 1)), 3)})
    return rows
