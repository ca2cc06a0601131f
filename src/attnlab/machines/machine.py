"""The two machine types of the pipeline: a single-tape Turing machine and a synchronous
Post machine (queue automaton: pop one symbol, push one symbol per step).

Both use integer codes: ``states[0]`` is the start state and ``symbols[0]`` the blank (padding) symbol.
A state with no transition for the symbol it reads halts, without a step; bbchallenge's counted halting
transition is an ordinary transition into a state without transitions (``1RZ``; the parser reads ``---``
that way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..core.errors import AttnlabError

L, R = -1, 1


@dataclass(frozen=True)
class TuringMachine:
    """M = (Q, Γ, blank, q0, δ) with δ: (q, a) -> (write, move, q'); missing (q, a) halts."""

    name: str
    states: tuple[str, ...]
    symbols: tuple[str, ...]
    delta: Mapping[tuple[int, int], tuple[int, int, int]] = field(repr=False)

    @property
    def blank(self) -> str:
        return self.symbols[0]

    def halts_on(self, q: int, a: int) -> bool:
        return (q, a) not in self.delta

    def encode(self, text: str) -> list[int]:
        """The input string as symbol codes (one character per cell)."""
        index = {s: i for i, s in enumerate(self.symbols)}
        bad = sorted({ch for ch in text if ch not in index})
        if bad:
            raise AttnlabError(f"input {text!r} has symbol(s) {', '.join(map(repr, bad))} not in the alphabet of "
                               f"{self.name} ({' '.join(self.symbols)})")
        return [index[ch] for ch in text]

    def table(self) -> list[tuple[int, int, int] | None]:
        """δ as a flat list indexed by q * |Γ| + a (None = halt), for fast loops."""
        k = len(self.symbols)
        return [self.delta.get((q, a)) for q in range(len(self.states)) for a in range(k)]

    def describe(self) -> str:
        lines = [f"Turing machine {self.name}: {len(self.states)} states, {len(self.symbols)} symbols "
                 f"(blank {self.blank!r}), start {self.states[0]}"]
        for (q, a), (w, m, q2) in sorted(self.delta.items()):
            lines.append(f"  {self.states[q]} {self.symbols[a]} -> {self.symbols[w]} {'L' if m < 0 else 'R'} "
                         f"{self.states[q2]}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PostMachine:
    """P = (S, Λ, s0, τ) with τ: (s, c) -> (s', pushed c'). A state without transitions halts; every
    other state must have a transition for every symbol (a fixed-size queue cannot idle)."""

    name: str
    states: tuple[str, ...]
    symbols: tuple[str, ...]
    delta: Mapping[tuple[int, int], tuple[int, int]] = field(repr=False)
    start: int = 0

    def __post_init__(self) -> None:
        k = len(self.symbols)
        active = {s for s, _ in self.delta}
        for s in active:
            missing = [self.symbols[c] for c in range(k) if (s, c) not in self.delta]
            if missing:
                raise AttnlabError(f"Post machine {self.name}: state {self.states[s]} has no transition for "
                                   f"{', '.join(map(repr, missing))} (every non-halting state must read every symbol)")

    @property
    def halting(self) -> frozenset[int]:
        active = {s for s, _ in self.delta}
        return frozenset(s for s in range(len(self.states)) if s not in active)

    def encode(self, text: str) -> list[int]:
        index = {s: i for i, s in enumerate(self.symbols)}
        bad = sorted({ch for ch in text if ch not in index})
        if bad:
            raise AttnlabError(f"input {text!r} has symbol(s) {', '.join(map(repr, bad))} not in the alphabet of "
                               f"{self.name} ({' '.join(self.symbols)})")
        return [index[ch] for ch in text]

    def initial_queue(self, cells: Sequence[int], window: int) -> list[int]:
        """The input padded with blanks to the queue length ``window``."""
        if len(cells) > window:
            raise AttnlabError(f"input of length {len(cells)} does not fit a queue of length {window} "
                               f"(use --window {len(cells)} or more)")
        return list(cells) + [0] * (window - len(cells))

    def describe(self) -> str:
        lines = [f"Post machine {self.name}: {len(self.states)} states ({len(self.halting)} halting), "
                 f"{len(self.symbols)} symbols, start {self.states[self.start]}"]
        for (s, c), (s2, c2) in sorted(self.delta.items()):
            lines.append(f"  {self.states[s]} pop {self.symbols[c]} -> push {self.symbols[c2]}, {self.states[s2]}")
        return "\n".join(lines)
