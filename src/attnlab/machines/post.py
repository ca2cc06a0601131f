"""TM -> Post machine: the cyclic-tape construction with a delayed append (lemma A, docs/machines.md).

The queue stores a cyclic tape of N = W + 1 cells: W cells in the queue and one in the register r of the
finite control (the "delayed append"). Queue symbols are (a, mark); states are <q, N|D, r> plus
<halt, q, a> for every undefined (q, a). In mode N the queue holds cells h, h+1, ..., h-2 and r = cell
h-1, so the next pop reads the head cell. A right move costs one PM step, a left move W steps (the
marked cell comes round to the front), and the halting read one more:

    PM steps = #R + W * #L + 1          (lemma A, asserted in the tests)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import AttnlabError
from .compile import check_size
from .machine import PostMachine, TuringMachine

NORMAL, DELAYED = 0, 1  # the two modes N and D


@dataclass(frozen=True)
class Translation:
    """A TM, the Post machine simulating it, and what each PM state and symbol means."""

    tm: TuringMachine
    pm: PostMachine
    n_mode_states: int  # states 0..n_mode_states-1 are <q, m, r>; the rest are <halt, q, a>
    halt_info: tuple[tuple[int, int], ...]  # (q, a) of each halting state

    def symbol(self, a: int, mark: int = 0) -> int:
        return 2 * a + mark

    def mode_state(self, q: int, mode: int, r: int) -> int:
        return (2 * q + mode) * len(self.tm.symbols) + r

    def initial_config(self, cells: Sequence[int], window: int) -> tuple[int, list[int]]:
        """(state, queue) for input ``cells``: cells 0..W-1 in the queue, cell W in the register."""
        if window < 1:
            raise AttnlabError(f"window must be at least 1, got {window}")
        if len(cells) > window + 1:
            raise AttnlabError(f"input of length {len(cells)} needs a window of at least {len(cells) - 1} "
                               f"(got --window {window})")
        tape = list(cells) + [0] * (window + 1 - len(cells))
        return self.mode_state(0, NORMAL, tape[window]), [self.symbol(a) for a in tape[:window]]

    def is_step(self, state: int, pushed: int) -> bool:
        """Whether the PM step that entered ``state`` pushing ``pushed`` was a head read (a completed TM
        step, or the halting read) rather than a rotation (mode D, unmarked push)."""
        return state >= self.n_mode_states or (state // len(self.tm.symbols)) % 2 == NORMAL or pushed % 2 == 1

    def decode(self, state: int, queue: Sequence[int]) -> tuple[int, list[int], bool]:
        """(TM state, cyclic tape starting at the head cell, halted) of a PM configuration at a head
        read: the tape is the queue with marks stripped followed by the register; the head is the marked
        cell if any, else the queue front (after the halting read: the register)."""
        k = len(self.tm.symbols)
        cells = [c // 2 for c in queue]
        if state >= self.n_mode_states:
            q, a = self.halt_info[state - self.n_mode_states]
            return q, [a] + cells, True
        q, r = state // (2 * k), state % k
        marked = [i for i, c in enumerate(queue) if c % 2]
        head = marked[0] if marked else 0
        tape = cells + [r]
        return q, tape[head:] + tape[:head], False


def tm_to_pm(tm: TuringMachine) -> Translation:
    """Build the Post machine of the construction above. Independent of the window W."""
    k = len(tm.symbols)
    halt_info = tuple((q, a) for q in range(len(tm.states)) for a in range(k) if tm.halts_on(q, a))
    n_mode = 2 * len(tm.states) * k
    check_size(tm.name, n_mode + len(halt_info), 2 * k, len(halt_info))  # before building anything
    names = [f"{q}.{m}.{a}" for q in tm.states for m in "ND" for a in tm.symbols]
    names += [f"halt.{tm.states[q]}.{tm.symbols[a]}" for q, a in halt_info]
    halt_index = {qa: n_mode + i for i, qa in enumerate(halt_info)}
    symbols = [f"{a}{mark}" for a in tm.symbols for mark in ("", "'")]

    def st(q: int, mode: int, r: int) -> int:
        return (2 * q + mode) * k + r

    delta: dict[tuple[int, int], tuple[int, int]] = {}
    for q in range(len(tm.states)):
        for mode in (NORMAL, DELAYED):
            for r in range(k):
                s = st(q, mode, r)
                for c in range(2 * k):
                    a, mark = divmod(c, 2)
                    if mode == DELAYED and not mark:  # rotation: the delayed append
                        delta[(s, c)] = (st(q, DELAYED, a), 2 * r)
                    elif (q, a) in halt_index:  # head read of a halting (q, a)
                        delta[(s, c)] = (halt_index[(q, a)], 2 * r)
                    else:
                        w, move, q2 = tm.delta[(q, a)]
                        delta[(s, c)] = (st(q2, NORMAL, w), 2 * r) if move > 0 else (st(q2, DELAYED, w), 2 * r + 1)
    pm = PostMachine(f"pm({tm.name})", tuple(names), tuple(symbols), delta)
    return Translation(tm, pm, n_mode, halt_info)


def expected_tokens(right: int, left: int, window: int) -> int:
    """PM steps (= generated tokens) for a halting run: #R + W * #L + 1 (lemma A)."""
    return right + window * left + 1
