"""Finite precision, measured: the paper's constant-precision claim and the softmax ablation.

- Emulated p-bit arithmetic: a sign, ``exp_bits`` exponent bits and ``man_bits`` mantissa bits
  (p = 1 + e + m), round to nearest even after every operation, saturating, with subnormals.
- Lemma B at any W: the RPE makes the oldest token the unique hardmax.
- Teacher-forced checks: the network's next token on every window of an exact run, so one pass
  over a run's windows proves the rounded (or softmax) network would generate the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .compile import CompiledTransformer, compile_pm
from .executors import TableExecutor
from .library import library_machine
from .network import network_logits
from .post import tm_to_pm
from .simulate import token_marks


@dataclass(frozen=True)
class Format:
    exp_bits: int
    man_bits: int

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def name(self) -> str:
        return f"p={self.bits} (e{self.exp_bits}m{self.man_bits})"

    def rounder(self) -> Callable[[np.ndarray], np.ndarray]:
        """Round to the nearest representable value (ties to even), saturating at the largest."""
        bias = 2 ** (self.exp_bits - 1) - 1
        emin, emax, m = 1 - bias, 2 ** self.exp_bits - 1 - bias, self.man_bits
        top = (2 - 2.0 ** -m) * 2.0 ** emax

        def rnd(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            a = np.abs(x)
            # a = f * 2**e with f in [0.5, 1): floor(log2 a) = e - 1 exactly (no log, no rounding of the log)
            e = np.clip(np.frexp(a)[1] - 1, emin, emax)
            step = np.ldexp(1.0, e - m)
            r = np.minimum(np.round(a / step) * step, top)
            return np.copysign(np.where(np.isfinite(r), r, top), x)

        return rnd


def oldest_is_selected(model: CompiledTransformer, rnd: Callable | None = None, seed: int = 0) -> bool:
    """Lemma B for the model's W: for every current token and random keys, the attention scores
    q_i (k_j + rpe(i - j)) over the whole window have a unique maximum at the oldest key. O(V + W)."""
    rnd = rnd or (lambda x: x)
    w = {k: v.astype(np.float64) for k, v in model.weights.items()}
    q = rnd(w["embed"] @ w["w_q"])[:, 0]  # (V,) one query per current token
    keys = np.random.default_rng(seed).integers(0, model.vocab_size, model.window)
    k = rnd(rnd(w["embed"] @ w["w_k"])[keys, 0] + model.rpe_by_offset(np.arange(model.window - 1, -1, -1)))
    best, rest = (k[0], k[1:].max(initial=-np.inf))
    # q > 0 for every token, so the order of q * k is the order of k
    return bool(np.all(q > 0) and best > rest and np.all(rnd(q * best) > rnd(q * rest)))


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


def precision_sweep(windows: list[int], formats: list[Format], limit: int = 128) -> list[dict]:
    """For each W and format: windows checked and errors of the rounded network on bcount '#0^(W-1)'.
    The run prefix covers the first left move and its full rotation (2W + 16 tokens) up to W = 4096,
    else 32 tokens."""
    rows = []
    for W in windows:
        n = 2 * W + 16 if W <= 4096 else 32
        model, stream = bcount_stream(W, n)
        starts = window_sample(n, limit)
        for f in formats:
            rows.append({"window": W, "format": f.name, "bits": f.bits, "windows_checked": len(starts),
                         "errors": teacher_forced_errors(model, stream, rnd=f.rounder(), starts=starts),
                         "lemma_b": oldest_is_selected(model, f.rounder()), "model_bits_at_p": model.params * f.bits})
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
