"""The busy-beaver champions in the library reproduce their published step and non-blank counts
(library.Entry.published, cited there); the multi-symbol ones also run exactly through the transformer."""

import pytest

from attnlab.machines.library import LIBRARY, LONG, library_machine
from attnlab.machines.reference import run_tm
from attnlab.machines.simulate import run_machine

PUBLISHED = {name: e.published for name, e in LIBRARY.items() if e.published}
FAST = [n for n in PUBLISHED if n != "bb5"]  # bb5: 47M steps, test_reference.py::test_bb5


def test_multi_symbol_champions_are_in_the_library():
    assert PUBLISHED["bb2x3"] == (38, 9) and PUBLISHED["bb2x4"] == (3_932_964, 2050)
    for name, k in (("bb2x3", 3), ("bb2x4", 4)):
        tm = library_machine(name)
        assert len(tm.symbols) == k and len([q for q in tm.states if q != "Z"]) == 2


@pytest.mark.parametrize("name", FAST)
def test_reference_reproduces_the_published_counts(name):
    """The halting step counted (bbchallenge convention); BB(2,4): 3,932,964 steps in about 1.5 s."""
    tm = library_machine(name)
    ref = run_tm(tm, [], 10**7)
    assert ref.halted and (ref.steps, ref.nonblank()) == PUBLISHED[name]


def test_bb2x3_runs_exactly_through_the_transformer():
    r = run_machine(library_machine("bb2x3"), "", executor="kv")
    assert r.halted and r.error is None and r.mismatches == 0
    assert (r.tm_steps, r.nonblank, r.window) == (38, 9, 8)
    assert r.tokens == (38 - 18) + 8 * 18 + 1  # lemma A: #R + W #L + 1 with 18 left moves


def check_bb2x4_prefix(steps: int) -> None:
    """The full BB(2,4) run is 4.0e9 tokens at W = 2,049 (library.LONG); its first ``steps`` TM steps, checked at
    every completed step against the reference, at the window those steps need."""
    tm = library_machine("bb2x4")
    r = run_machine(tm, "", executor="table", max_steps=steps)
    ref = run_tm(tm, [], steps - 1)
    head = ref.head
    ref.run(1)
    assert r.error is None and r.mismatches == 0 and r.checks == steps and not r.halted
    assert (r.tm_steps, r.window) == (steps, ref.span - 1)
    # lemma A on a prefix: a left move is counted at its first token, its W - 1 rotations follow it
    pending = r.window - 1 if ref.head < head else 0
    assert r.tokens == (steps - ref.left_moves) + r.window * ref.left_moves - pending


def test_bb2x4_prefix_through_the_transformer():
    assert "bb2x4" in LONG
    check_bb2x4_prefix(3000)


@pytest.mark.slow
def test_bb2x4_longer_prefix_through_the_transformer():
    check_bb2x4_prefix(100_000)
