"""Reference interpreters: a Turing machine on a two-way infinite tape and a Post machine on a
queue. Obviously correct on purpose; every executor is checked against them."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .machine import PostMachine, TuringMachine


class TMRun:
    """A running Turing machine. The tape is a bytearray grown on demand; ``origin`` is the index of
    absolute cell 0 (the first input cell, where the head starts). ``lo``/``hi`` bound the cells
    visited or holding input (absolute), so ``span`` is the space the run has used."""

    def __init__(self, tm: TuringMachine, cells: Sequence[int]):
        self.tm = tm
        self.tape = bytearray(cells) if cells else bytearray(1)
        self.origin = 0
        self.head = 0
        self.state = 0
        self.steps = 0
        self.lo, self.hi = 0, max(len(cells), 1) - 1
        self.halted = tm.halts_on(0, self.tape[0])

    def run(self, max_steps: int) -> TMRun:
        """Take up to ``max_steps`` more steps; stops early at a halting (state, symbol)."""
        table, k = self.tm.table(), len(self.tm.symbols)
        tape, o = self.tape, self.origin
        h, q, lo, hi = self.head + o, self.state, self.lo + o, self.hi + o
        n = 0
        while n < max_steps:
            t = table[q * k + tape[h]]
            if t is None:
                break
            tape[h] = t[0]
            h += t[1]
            q = t[2]
            n += 1
            if h < lo:
                lo = h
                if h < 0:  # grow to the left: every index shifts
                    grow = len(tape)
                    tape[0:0] = bytes(grow)
                    h, lo, hi, o = h + grow, lo + grow, hi + grow, o + grow
            elif h > hi:
                hi = h
                if h == len(tape):
                    tape.extend(bytes(len(tape)))
        self.origin, self.head, self.state, self.lo, self.hi = o, h - o, q, lo - o, hi - o
        self.steps += n
        self.halted = table[q * k + tape[h]] is None
        return self

    @property
    def span(self) -> int:
        return self.hi - self.lo + 1

    @property
    def left_moves(self) -> int:
        return (self.steps - self.head) // 2  # steps = #R + #L and head = #R - #L

    def cell(self, pos: int) -> int:
        i = pos + self.origin
        return self.tape[i] if 0 <= i < len(self.tape) else 0

    def cells(self) -> tuple[int, list[int]]:
        """(leftmost absolute position, symbols) from the leftmost to the rightmost non-blank cell."""
        nz = [i for i, c in enumerate(self.tape) if c]
        if not nz:
            return 0, []
        return nz[0] - self.origin, list(self.tape[nz[0]:nz[-1] + 1])

    def tape_string(self) -> str:
        return "".join(self.tm.symbols[c] for c in self.cells()[1])

    def nonblank(self) -> int:
        return sum(1 for c in self.tape if c)


def run_tm(tm: TuringMachine, cells: Sequence[int], max_steps: int = 10**9) -> TMRun:
    return TMRun(tm, cells).run(max_steps)


class PMRun:
    """A running Post machine: pop the front symbol, push one symbol at the rear, per step."""

    def __init__(self, pm: PostMachine, state: int, queue: Sequence[int]):
        self.pm = pm
        self.state = state
        self.queue = deque(queue)
        self.steps = 0
        self.halted = state in pm.halting

    def run(self, max_steps: int) -> PMRun:
        delta, q, s, n = self.pm.delta, self.queue, self.state, 0
        halting = self.pm.halting
        while n < max_steps and s not in halting:
            s, c = delta[(s, q.popleft())]
            q.append(c)
            n += 1
        self.state, self.steps, self.halted = s, self.steps + n, s in halting
        return self

    def queue_string(self) -> str:
        return "".join(self.pm.symbols[c] for c in self.queue)
