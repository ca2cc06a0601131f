"""Machines in: the bbchallenge text format and YAML files (Turing or Post machines).

Every malformed input raises :class:`AttnlabError` with one line that names the line and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..core.errors import AttnlabError
from .machine import L, PostMachine, R, TuringMachine

BBCHALLENGE = re.compile(r"^[0-9LRA-Z_\-]+$")
_TRIPLE = re.compile(r"^(?:([0-9])([LR])([A-Z])|---)$")


def parse_bbchallenge(text: str, name: str | None = None) -> TuringMachine:
    """``1RB1LB_1LA0LC_1RZ1LD_1RD0RA``: per state one ``write move next`` triple for each read symbol
    0, 1, ...; states are A, B, C, ...; a target past the last state (e.g. Z) halts. ``---`` (undefined)
    halts with bbchallenge's counting: the halting transition is a step that writes 1, i.e. ``1RZ``
    (so ``---0LA`` and ``1RZ0LA`` give BB5 the same 47,176,870 steps and 4098 ones)."""
    text = text.strip()
    parts = text.split("_")
    if not text or not all(parts):
        raise AttnlabError(f"bbchallenge string {text!r}: empty state (states are separated by single '_')")
    width = len(parts[0])
    if width % 3 or width == 0:
        raise AttnlabError(f"bbchallenge string {text!r}: state A has {width} characters, expected 3 per symbol")
    k = width // 3
    if k < 2:
        raise AttnlabError(f"bbchallenge string {text!r}: one symbol per state; at least two (0 and 1) are needed")
    names = [chr(ord("A") + i) for i in range(len(parts))]
    if len(parts) > 25:
        raise AttnlabError(f"bbchallenge string: {len(parts)} states, at most 25 (A..Y) are supported")
    states = list(names)
    delta: dict[tuple[int, int], tuple[int, int, int]] = {}
    for q, part in enumerate(parts):
        if len(part) != width:
            raise AttnlabError(f"bbchallenge string {text!r}: state {names[q]} has {len(part)} characters, "
                               f"expected {width} like state A")
        for a in range(k):
            triple = part[3 * a:3 * a + 3]
            m = _TRIPLE.match(triple)
            if not m:
                raise AttnlabError(f"bbchallenge string: state {names[q]} symbol {a}: {triple!r} is not "
                                   f"'<digit><L|R><state>' or '---'")
            w, move, target = (1, "R", "Z") if triple == "---" else (int(m.group(1)), m.group(2), m.group(3))
            if w >= k and triple != "---":
                raise AttnlabError(f"bbchallenge string: state {names[q]} symbol {a}: writes {w} but the machine "
                                   f"has only symbols 0..{k - 1}")
            if target not in states:
                states.append(target)  # a state without transitions: halts
            delta[(q, a)] = (w, L if move == "L" else R, states.index(target))
    return TuringMachine(name or text, tuple(states), tuple(str(i) for i in range(k)), delta)


# --- YAML ----------------------------------------------------------------------------------------------

class _Doc:
    """A composed YAML document with line-aware accessors (errors name ``source:line``)."""

    def __init__(self, text: str, source: str):
        self.source = source
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise AttnlabError(f"{source}{line}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
        if self.root is None:
            raise AttnlabError(f"{source}: empty file (expected a machine with 'transitions')")

    def error(self, node: yaml.Node, message: str) -> AttnlabError:
        return AttnlabError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out, seen = [], set()
        for k, v in node.value:
            key = self.scalar(k, f"a key of {what}")
            if key in seen:
                raise self.error(k, f"duplicate key {key!r} in {what}")
            seen.add(key)
            out.append((key, k, v))
        return out

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value")
        return node.value

    def sequence(self, node: yaml.Node, what: str, length: int) -> list[str]:
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != length:
            raise self.error(node, f"{what} must be a list of {length} values")
        return [self.scalar(v, what) for v in node.value]


_TOP_KEYS = {"name", "kind", "blank", "start", "transitions", "description", "input"}


def parse_yaml(text: str, source: str = "<yaml>", name: str | None = None) -> TuringMachine | PostMachine:
    """A Turing machine (``transitions: {state: {read: [write, L|R, next]}}``) or, with ``kind: post``,
    a Post machine (``transitions: {state: {pop: [push, next]}}``). A missing entry halts (Turing);
    a Post state with transitions must cover every symbol."""
    return parse_yaml_with_input(text, source, name)[0]


def parse_yaml_with_input(text: str, source: str = "<yaml>",
                          name: str | None = None) -> tuple[TuringMachine | PostMachine, str | None]:
    """:func:`parse_yaml` and the file's ``input:`` (the default input of a run; None when absent), checked
    against the machine's alphabet."""
    doc = _Doc(text, source)
    top = {key: (knode, v) for key, knode, v in doc.mapping(doc.root, "the machine")}
    for key, (knode, _) in top.items():
        if key not in _TOP_KEYS:
            raise doc.error(knode, f"unknown key {key!r} (expected {', '.join(sorted(_TOP_KEYS))})")
    if "transitions" not in top:
        raise doc.error(doc.root, "missing 'transitions'")
    get = {key: doc.scalar(v, key) for key, (_, v) in top.items() if key not in ("transitions",)}
    kind = get.get("kind", "turing")
    if kind not in ("turing", "post"):
        raise doc.error(top["kind"][1], f"kind must be 'turing' or 'post', got {kind!r}")
    blank = get.get("blank", "_")
    if len(blank) != 1:
        raise doc.error(top["blank"][1], f"blank must be one character, got {blank!r}")
    name = name or get.get("name") or Path(source).stem
    arity = 3 if kind == "turing" else 2

    trans_node = top["transitions"][1]
    rows = doc.mapping(trans_node, "transitions")
    if not rows:
        raise doc.error(trans_node, "transitions is empty")
    states = [s for s, _, _ in rows]
    start = get.get("start", states[0])
    if start not in states:
        raise doc.error(top["start"][1] if "start" in top else trans_node,
                        f"start state {start!r} has no transitions")
    symbols = [blank]
    raw: list[tuple[yaml.Node, str, str, list[str]]] = []
    for state, _, row in rows:
        for read, rnode, action in doc.mapping(row, f"the transitions of state {state!r}"):
            values = doc.sequence(action, f"state {state!r} reading {read!r}: the action "
                                          f"[{'write, move, next' if arity == 3 else 'push, next'}]", arity)
            for sym, node in ((read, rnode), (values[0], action)):
                if len(sym) != 1:
                    raise doc.error(node, f"state {state!r}: symbol {sym!r} must be one character")
                if sym not in symbols:
                    symbols.append(sym)
            if arity == 3 and values[1] not in ("L", "R"):
                raise doc.error(action, f"state {state!r} reading {read!r}: move must be L or R, got {values[1]!r}")
            raw.append((action, state, read, values))
    # start first, then states in order of appearance (targets without transitions halt)
    order = [start] + [s for s in states if s != start]
    for _, _, _, values in raw:
        if values[-1] not in order:
            order.append(values[-1])
    q = {s: i for i, s in enumerate(order)}
    a = {s: i for i, s in enumerate(symbols)}
    if kind == "turing":
        delta = {(q[s], a[r]): (a[v[0]], L if v[1] == "L" else R, q[v[2]]) for _, s, r, v in raw}
        return _with_input(doc, top, TuringMachine(name, tuple(order), tuple(symbols), delta))
    for state, knode, _ in rows:  # a fixed-size queue cannot idle: a state with transitions reads everything
        missing = [c for c in symbols if not any(s == state and r == c for _, s, r, _ in raw)]
        if missing and any(s == state for _, s, _, _ in raw):
            raise doc.error(knode, f"state {state!r} has no transition for {', '.join(map(repr, missing))} "
                                   f"(a Post machine state reads every symbol, or none to halt)")
    pdelta = {(q[s], a[r]): (q[v[1]], a[v[0]]) for _, s, r, v in raw}
    return _with_input(doc, top, PostMachine(name, tuple(order), tuple(symbols), pdelta))


def _with_input(doc: _Doc, top: dict, machine: TuringMachine | PostMachine) -> tuple[TuringMachine | PostMachine,
                                                                                     str | None]:
    if "input" not in top:
        return machine, None
    node = top["input"][1]
    text = doc.scalar(node, "input")
    try:
        machine.encode(text)
    except AttnlabError as e:
        raise doc.error(node, str(e)) from None
    return machine, text
