"""The space characterisation, measured: WINDOW[s(n)] = SPACE[s(n)] (Li & Wang 2025, abstract and Sec. 1).

For a machine and an input, s(n) is the number of cells the reference run visits (input cells included,
:func:`~.simulate.space_bound`). The construction (docs/machines.md, lemma A) keeps a cyclic tape of W + 1 cells,
so it is exact for W >= s(n) - 1; the paper states a window of s(n), one more. :func:`window_sweep` runs the
compiled transformer *without* the harness's window check at W = s(n) - 1 + k for a few offsets k, decodes the
configuration after every completed TM step and compares it with the reference TM:

- ``first_mismatch``: the first TM step whose decoded configuration (state, head, every non-blank cell) is not
  the reference's: the simulation is no longer exact;
- ``first_divergence``: the first TM step at which the network reads a different (state, symbol) than the
  reference, so the computation itself departs (it can follow the reference to the end with a wrong tape);
- ``overflow``: the first TM step after which the reference has visited more than W + 1 cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import AttnlabError
from .compile import compile_pm
from .executors import make_executor
from .machine import TuringMachine
from .post import NORMAL, Translation, tm_to_pm
from .reference import TMRun, run_tm
from .simulate import advance, token_marks, unroll

#: The experiment of docs/machines.md: library machines with their inputs (``attnlab machines space``).
DEFAULT_CASES: tuple[tuple[str, str], ...] = (("bb2", ""), ("bb3", ""), ("bb4", ""), ("bb2x3", ""),
                                              ("bcount", "#0000"), ("binc", "1011"), ("copy", "111"),
                                              ("pal", "abba"), ("uadd", "111011"),
                                              ("utm", "110101110000010011011yyAyyAyy"))
DEFAULT_OFFSETS: tuple[int, ...] = (-3, -2, -1, 0, 1)


@dataclass(frozen=True)
class WindowOutcome:
    """One run of the compiled transformer at window W = s(n) - 1 + offset."""

    machine: str
    input: str
    space: int  # s(n): cells the reference run visits
    window: int
    offset: int  # W - (s(n) - 1)
    exact: bool  # every decoded configuration and the halt equal the reference's
    first_mismatch: int | None
    first_divergence: int | None
    overflow: int | None
    halted: bool
    tm_steps: int
    tokens: int
    final_state: str
    tape: str
    nonblank: int
    reference_steps: int
    reference_tape: str
    reference_nonblank: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _NetworkTape:
    """The network's own configuration in absolute cells: its head follows the moves the network makes and the
    W + 1 decoded cells are the window [lo, lo + W] that contains it."""

    def __init__(self, tr: Translation, cells: int):
        self.tr, self.n, self.head, self.lo = tr, cells, 0, 0

    def step(self, state: int) -> None:
        """Move the head as the completed TM step that entered PM ``state`` did (mode N: right, D: left)."""
        k = len(self.tr.tm.symbols)
        self.head += 1 if (state // k) % 2 == NORMAL else -1
        if self.head < self.lo:
            self.lo = self.head
        elif self.head > self.lo + self.n - 1:
            self.lo = self.head - self.n + 1

    def cells(self, cyclic: Sequence[int]) -> list[int]:
        """Cells lo .. lo + W from the decoded cyclic tape (head cell first)."""
        return unroll(list(cyclic), self.head, self.lo + self.n - 1)


def _same_configuration(ref: TMRun, q: int, net: _NetworkTape, cells: list[int]) -> bool:
    """The network's (state, head, tape) is the reference's: equal on its W + 1 cells and blank elsewhere."""
    if q != ref.state or net.head != ref.head:
        return False
    window = [ref.cell(p) for p in range(net.lo, net.lo + net.n)]
    return window == cells and sum(1 for c in window if c) == ref.nonblank()


def run_at_window(tm: TuringMachine, text: str, window: int, executor: str = "table", max_steps: int = 10**6,
                  tr: Translation | None = None) -> WindowOutcome:
    """Run ``tm`` on ``text`` through its transformer compiled at ``window``, whatever the space the run needs;
    see the module docstring for what is compared. The reference runs at most ``max_steps`` TM steps, the network
    at most twice the reference's steps + 100 (a wrong run need not halt)."""
    tr = tr or tm_to_pm(tm)
    cells = tm.encode(text)
    full = run_tm(tm, cells, max_steps)
    cap = 2 * full.steps + 100
    space = full.span
    model = compile_pm(tr.pm, window)
    state, queue = tr.initial_config(cells, window)  # refuses an input longer than W + 1 cells
    ex = make_executor(executor, model, model.prompt(state, queue), token_marks(tr, model))
    n_sym, ref, net = model.n_symbols, TMRun(tm, cells), _NetworkTape(tr, window + 1)
    mismatch = divergence = overflow = None
    q, cyclic, steps = 0, [], 0  # set by the first head read: a TM's prompt never halts
    while not ex.halted and steps < cap:
        if advance(ex, 1, window + 1, None) != 1:
            raise AttnlabError(f"{tm.name}: no head read within {window + 1} tokens at W={window}")
        s = ex.cur // n_sym
        q, cyclic, halted = tr.decode(s, [t % n_sym for t in ex.window()])
        if halted:  # the halting read: no TM step, no move
            if divergence is None and not ref.halted:
                divergence = steps
            break
        steps += 1
        net.step(s)
        if not ref.halted:
            ref.run(1)
            if overflow is None and ref.span > window + 1:
                overflow = steps
        if divergence is None and (ref.halted and ref.steps < steps or (q, cyclic[0]) != (ref.state,
                                                                                          ref.cell(ref.head))):
            divergence = steps
        if mismatch is None and (divergence is not None or not _same_configuration(ref, q, net,
                                                                                   net.cells(cyclic))):
            mismatch = steps
    if ex.halted and not ref.halted and divergence is None:
        divergence = steps
    if not ex.halted and full.halted and mismatch is None:
        mismatch = steps  # the reference halted, the network has not within the cap
    final = net.cells(cyclic)
    nz = [i for i, c in enumerate(final) if c]
    tape = "".join(tm.symbols[c] for c in final[nz[0]:nz[-1] + 1]) if nz else ""
    if mismatch is None and (ex.halted, steps) != (full.halted, full.steps):
        mismatch = steps
    return WindowOutcome(tm.name, text, space, window, window - (space - 1), mismatch is None, mismatch, divergence,
                         overflow, bool(ex.halted), steps, ex.tokens, tm.states[q], tape, len(nz), full.steps,
                         full.tape_string(), full.nonblank())


def window_sweep(tm: TuringMachine, text: str, offsets: Sequence[int] = DEFAULT_OFFSETS, executor: str = "table",
                 max_steps: int = 10**6) -> list[WindowOutcome]:
    """:func:`run_at_window` at W = s(n) - 1 + k for each offset k (windows that cannot hold the input, or below
    1, are left out)."""
    cells = tm.encode(text)
    ref = run_tm(tm, cells, max_steps)
    if not ref.halted:
        raise AttnlabError(f"{tm.name} on {text!r} does not halt within {max_steps:,} steps, so s(n) is not "
                           f"known; raise --max-steps or choose a halting input")
    tr = tm_to_pm(tm)
    windows = sorted({ref.span - 1 + k for k in offsets if ref.span - 1 + k >= max(len(cells) - 1, 1)})
    return [run_at_window(tm, text, w, executor, max_steps, tr) for w in windows]


def threshold(outcomes: Sequence[WindowOutcome]) -> dict[str, Any]:
    """The measured boundary of one sweep against the construction's s(n) - 1 and the paper's window s(n):
    ``measured_threshold`` is the smallest W from which every window tried is exact."""
    if not outcomes:
        raise AttnlabError("no window to summarise (every offset left the input outside the window)")
    space, ordered = outcomes[0].space, sorted(outcomes, key=lambda o: o.window)
    measured = None
    for o in reversed(ordered):
        if not o.exact:
            break
        measured = o.window
    below = [o for o in ordered if o.window < space - 1]
    return {"machine": outcomes[0].machine, "input": outcomes[0].input, "space": space,
            "construction_threshold": space - 1, "paper_window": space, "measured_threshold": measured,
            "exact_at_and_above": all(o.exact for o in ordered if o.window >= space - 1),
            "failing_below": [o.window for o in below if not o.exact],
            "exact_below": [o.window for o in below if o.exact]}


COLUMNS = ("machine", "input", "s(n)", "W", "W-(s(n)-1)", "exact", "first mismatch", "first divergence",
           "overflow", "halted", "TM steps", "tokens", "tape", "non-blank", "reference steps", "reference tape")


def table_rows(outcomes: Sequence[WindowOutcome]) -> list[list[Any]]:
    """One row per run, in :data:`COLUMNS` order."""
    return [[o.machine, o.input, o.space, o.window, o.offset, o.exact, o.first_mismatch, o.first_divergence,
             o.overflow, o.halted, o.tm_steps, o.tokens, o.tape, o.nonblank, o.reference_steps, o.reference_tape]
            for o in outcomes]


def markdown(outcomes: Sequence[WindowOutcome], command: str) -> str:
    """The table as Markdown (docs/results/machines/space.md); a missing step is '-'."""
    def cell(v: Any) -> str:
        return "-" if v is None else "yes" if v is True else "no" if v is False else f"`{v}`" if isinstance(
            v, str) and v else str(v)

    lines = [f"Produced by `{command}`.", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table_rows(outcomes)]
    return "\n".join(lines) + "\n"
