"""The harness: run a machine through its compiled transformer with any executor, decode the
configuration at completed TM steps and check it against the reference interpreter.

A window that is too small is never a silent wrong answer: the reference run's space is compared with
the W + 1 cells of the cyclic tape at every check, and the decoded tape must equal the reference's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .certificate import Certificate
from .compile import CompiledTransformer, compile_pm
from .executors import Executor, make_executor
from .machine import PostMachine, TuringMachine
from .post import Translation, expected_tokens, tm_to_pm
from .reference import PMRun, TMRun, run_tm


@dataclass
class RunResult:
    machine: str
    input: str
    executor: str
    halted: bool
    final_state: str
    tape: str
    nonblank: int
    tm_steps: int
    left_moves: int
    tokens: int
    window: int
    mismatches: int
    checks: int
    tokens_per_s: float | None  # None for the reference interpreter, which generates no tokens
    seconds: float
    sizes: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        sizes = d.pop("sizes")
        d.update({k: v for k, v in sizes.items() if k != "window"})
        d["tokens_per_tm_step"] = round(self.tokens / self.tm_steps, 3) if self.tm_steps else None
        d["tm_steps_per_s"] = round(self.tm_steps / self.seconds, 1) if self.seconds > 0 else None
        return d


@dataclass(frozen=True)
class SpaceBound:
    """The space s(n) of a reference run: the cells it visits or that hold input, within ``max_steps`` steps."""

    input_length: int
    cells_visited: int
    tm_steps: int
    halted: bool
    max_steps: int

    @property
    def window(self) -> int:
        """The smallest W whose cyclic tape (W + 1 cells) holds every visited cell: s(n) - 1."""
        return max(self.cells_visited - 1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": "exact iff the run visits at most W + 1 cells: W >= s(n) - 1, where s(n) = "
                "cells_visited counts the input cells; measured by a reference run of tm_steps steps" +
                ("" if self.halted else " (not halted within max_steps: the bound holds for those steps only)")}


def space_bound(tm: TuringMachine, cells: Sequence[int], max_steps: int) -> SpaceBound:
    """s(n) of WINDOW[s(n)] = SPACE[s(n)] for this input, from a reference run of at most ``max_steps`` steps."""
    ref = run_tm(tm, cells, max_steps)
    return SpaceBound(len(cells), ref.span, ref.steps, ref.halted, max_steps)


def minimal_window(tm: TuringMachine, cells: Sequence[int], max_steps: int) -> int:
    """The smallest W whose cyclic tape (W + 1 cells) holds every cell the run visits (s(n) - 1)."""
    return space_bound(tm, cells, max_steps).window


def too_small(cells: int, steps: int, window: int, need: int) -> str:
    """The one-line error for a window whose cyclic tape cannot hold the run (the same for run and compile)."""
    return (f"window too small: the run visits {cells} cells after {steps} steps but window {window} holds "
            f"{window + 1} (this run needs --window {need}; omit --window to size it automatically)")


def advance(ex: Executor, count: int, max_tokens: int, trace: list[int] | None) -> int:
    """``ex.advance``, also appending every generated token to ``trace`` when one is given (chunks of at most
    W tokens, read back from the ring, so the executors' loops stay as they are)."""
    if trace is None:
        return ex.advance(count, max_tokens)
    W, seen, left = ex.model.window, 0, max_tokens
    while left > 0 and seen < count and not ex.halted:
        before = ex.tokens
        seen += ex.advance(count - seen, min(W, left))
        n = ex.tokens - before
        if n == 0:
            break
        trace.extend(ex.window()[W - n:])
        left -= n
    return seen


def token_marks(tr: Translation, model: CompiledTransformer) -> list[int]:
    """Per token: 2 = halting read, 1 = head read (a completed TM step), 0 = rotation."""
    n_sym, halting = model.n_symbols, tr.pm.halting
    return [2 if s in halting else int(tr.is_step(s, c)) for s, c in
            (divmod(t, n_sym) for t in range(model.vocab_size))]


def unroll(cyclic: list[int], head: int, hi: int) -> list[int]:
    """The cyclic tape (head cell first) as absolute cells hi-N+1 .. hi, N = len(cyclic)."""
    n = len(cyclic)
    out = [0] * n
    for k, c in enumerate(cyclic):
        p = head + k
        if p > hi:
            p -= n
        out[p - (hi - n + 1)] = c
    return out


def run_tm_transformer(tm: TuringMachine, text: str = "", window: int | None = None, executor: str = "table",
                       max_steps: int = 10**7, check_every: int = 1, model: CompiledTransformer | None = None,
                       certificate: Certificate | None = None, trace: list[int] | None = None) -> RunResult:
    """Run ``tm`` on ``text`` as a transformer; check the decoded configuration against the reference TM
    every ``check_every`` completed TM steps and at the end. ``trace``: a list that receives the W prompt
    tokens, then every generated token id."""
    cells = tm.encode(text)
    if window is None:
        window = max(minimal_window(tm, cells, max_steps), len(cells) - 1)
    if executor == "reference":
        return _run_reference(tm, text, cells, window, max_steps)
    tr = tm_to_pm(tm)
    model = compile_pm(tr.pm, window) if model is None else model.with_window(window)
    state, queue = tr.initial_config(cells, window)
    prompt = model.prompt(state, queue)
    if trace is not None:
        trace.extend(prompt)
    ex = make_executor(executor, model, prompt, token_marks(tr, model), certificate)
    ref = TMRun(tm, cells)
    n_sym, span_cells = model.n_symbols, window + 1
    mismatches = checks = 0
    error = None
    busy = 0.0
    q, got = 0, []
    while True:
        # after the TM enters a halting (q, a) the PM still takes its halting read: one more token
        want = 1 if ref.halted else max(min(check_every, max_steps - ref.steps), 1)
        t0 = time.perf_counter()
        heads = advance(ex, want, want * window + 1, trace)
        busy += time.perf_counter() - t0
        ref.run(heads - (1 if ex.halted else 0))  # the halting read is not a TM step
        checks += 1
        q, cyclic, halted = tr.decode(ex.cur // n_sym, [t % n_sym for t in ex.window()])
        if ref.span > span_cells:
            mismatches += 1
            error = too_small(ref.span, ref.steps, window, minimal_window(tm, cells, max_steps))
            break
        got = unroll(cyclic, ref.head, ref.hi)
        expected = [ref.cell(p) for p in range(ref.hi - span_cells + 1, ref.hi + 1)]
        if got != expected or q != ref.state or (halted and not ref.halted):
            mismatches += 1
            error = f"decoded configuration differs from the reference TM after {ref.steps} steps"
            break
        if halted or (ref.steps >= max_steps and not ref.halted):
            break
    nz = [i for i, c in enumerate(got) if c]
    tape = "".join(tm.symbols[c] for c in got[nz[0]:nz[-1] + 1]) if nz else ""
    return RunResult(tm.name, text, executor, bool(ex.halted and not error), tm.states[q], tape, len(nz),
                     ref.steps, ref.left_moves, ex.tokens, window, mismatches, checks,
                     round(ex.tokens / busy, 1) if busy > 0 else 0.0, round(busy, 6), model.sizes(), error)


def _run_reference(tm: TuringMachine, text: str, cells: list[int], window: int, max_steps: int) -> RunResult:
    t0 = time.perf_counter()
    ref = run_tm(tm, cells, max_steps)
    busy = time.perf_counter() - t0
    model = compile_pm(tm_to_pm(tm).pm, window)
    # the tokens the transformer would generate (lemma A), so the reference row is comparable
    tokens = expected_tokens(ref.steps - ref.left_moves, ref.left_moves, window) if ref.halted else 0
    return RunResult(tm.name, text, "reference", ref.halted, tm.states[ref.state], ref.tape_string(), ref.nonblank(),
                     ref.steps, ref.left_moves, tokens, window, 0, 0, None, round(busy, 6), model.sizes(), None)


def run_pm_transformer(pm: PostMachine, text: str = "", window: int | None = None, executor: str = "table",
                       max_steps: int = 10**7, model: CompiledTransformer | None = None,
                       trace: list[int] | None = None) -> RunResult:
    """Run a Post machine given directly: queue = input padded to W; compared with the reference PM."""
    cells = pm.encode(text)
    window = window or max(len(cells), 1)
    queue = pm.initial_queue(cells, window)
    ref = PMRun(pm, pm.start, queue)
    t0 = time.perf_counter()
    if executor == "reference":
        ref.run(max_steps)
        busy = time.perf_counter() - t0
        sizes = compile_pm(pm, window).sizes()
        return RunResult(pm.name, text, executor, ref.halted, pm.states[ref.state], ref.queue_string(),
                         sum(1 for c in ref.queue if c), 0, 0, ref.steps, window, 0, 0, None, round(busy, 6), sizes)
    model = compile_pm(pm, window) if model is None else model.with_window(window)
    marks = [2 if t // model.n_symbols in pm.halting else 0 for t in range(model.vocab_size)]
    prompt = model.prompt(pm.start, queue)
    if trace is not None:
        trace.extend(prompt)
    ex = make_executor(executor, model, prompt, marks)
    t0 = time.perf_counter()
    advance(ex, 1, max_steps, trace)
    busy = time.perf_counter() - t0
    ref.run(ex.tokens)
    syms = [t % model.n_symbols for t in ex.window()]
    state = ex.cur // model.n_symbols
    mismatches = int(syms != list(ref.queue) or state != ref.state)
    return RunResult(pm.name, text, executor, bool(ex.halted), pm.states[state], "".join(pm.symbols[c] for c in syms),
                     sum(1 for c in syms if c), 0, 0, ex.tokens, window, mismatches, 1,
                     round(ex.tokens / busy, 1) if busy > 0 else 0.0, round(busy, 6), model.sizes(),
                     "the transformer's queue differs from the reference Post machine" if mismatches else None)


def run_machine(machine: TuringMachine | PostMachine, text: str = "", **kw: Any) -> RunResult:
    if isinstance(machine, PostMachine):
        kw.pop("check_every", None)
        kw.pop("certificate", None)
        return run_pm_transformer(machine, text, **kw)
    return run_tm_transformer(machine, text, **kw)

