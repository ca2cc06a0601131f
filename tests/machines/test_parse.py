import pytest

from attnlab.core.errors import AttnlabError
from attnlab.machines.library import LIBRARY, library_machine, load_machine
from attnlab.machines.machine import L, PostMachine, R, TuringMachine
from attnlab.machines.parse import parse_bbchallenge, parse_yaml
from attnlab.machines.reference import run_tm

EXAMPLE_YAML = """\
name: binc
blank: "_"
start: R
transitions:            # state: {read: [write, move L|R, next]}; a missing entry halts
  R: {"0": ["0", R, R], "1": ["1", R, R], "_": ["_", L, C]}
  C: {"1": ["0", L, C], "0": ["1", L, H], "_": ["1", L, H]}
"""


def test_bbchallenge_bb4():
    tm = parse_bbchallenge("1RB1LB_1LA0LC_1RZ1LD_1RD0RA")
    assert tm.states == ("A", "B", "C", "D", "Z") and tm.symbols == ("0", "1")
    assert tm.delta[(0, 0)] == (1, R, 1) and tm.delta[(1, 1)] == (0, L, 2)
    assert tm.halts_on(4, 0) and tm.halts_on(4, 1) and not tm.halts_on(2, 0)


def test_bbchallenge_undefined_transition_is_the_counted_halting_step():
    """bbchallenge writes the halting transition as '---' and counts it (as 1RZ): same BB4 numbers."""
    tm = parse_bbchallenge("1RB1LB_1LA0LC_---1LD_1RD0RA")
    assert tm.states[-1] == "Z" and tm.delta[(2, 0)] == (1, R, 4)
    r = run_tm(tm, [])
    assert r.halted and r.steps == 107 and r.nonblank() == 13


@pytest.mark.parametrize("text, fragment", [
    ("1RB1LB_1LA0L", "state B has 5 characters"),
    ("1RB1LB_1LA0XC", "'0XC' is not"),
    ("2RB1LB_1LA0LC", "writes 2"),
    ("1RB1LB__1LA0LC", "empty state"),
    ("1RB_0LA", "at least two"),
])
def test_bbchallenge_errors(text, fragment):
    with pytest.raises(AttnlabError, match=fragment):
        parse_bbchallenge(text)


def test_yaml_example():
    tm = parse_yaml(EXAMPLE_YAML)
    assert isinstance(tm, TuringMachine) and tm.name == "binc"
    assert tm.states == ("R", "C", "H") and tm.symbols == ("_", "0", "1")
    assert tm.delta[(1, 1)] == (2, L, 2)  # C reads 0: write 1, left, H


@pytest.mark.parametrize("text, fragment", [
    ("transitions:\n  A: {\"0\": [\"1\", X, A]}\n", ":2: state 'A' reading '0': move must be L or R"),
    ("transitions:\n  A: {\"0\": [\"1\", R]}\n", ":2: state 'A' reading '0': the action"),
    ("name: x\nfoo: 1\ntransitions:\n  A: {}\n", ":2: unknown key 'foo'"),
    ("name: x\n", ":1: missing 'transitions'"),
    ("transitions:\n  A: {\"0\": [\"1\", R, A]\n  B: [\n", ":3: invalid YAML"),
    ("transitions:\n  A: {\"00\": [\"1\", R, A]}\n", ":2: state 'A': symbol '00' must be one character"),
    ("start: Q\ntransitions:\n  A: {\"0\": [\"1\", R, A]}\n", ":1: start state 'Q' has no transitions"),
    ("transitions:\n  A: {\"0\": [\"1\", R, A]}\n  A: {}\n", ":3: duplicate key 'A'"),
])
def test_yaml_errors_name_the_line(text, fragment):
    with pytest.raises(AttnlabError) as e:
        parse_yaml(text, source="m.yaml")
    assert fragment in str(e.value) and str(e.value).startswith("m.yaml:") and "\n" not in str(e.value)


def test_post_yaml_and_totality():
    pm = parse_yaml('kind: post\ntransitions:\n  s: {"a": ["b", s], "b": ["a", s], "_": ["_", h]}\n')
    assert isinstance(pm, PostMachine) and pm.halting == frozenset({1})
    with pytest.raises(AttnlabError, match=":3: state 's' has no transition for 'b'"):
        parse_yaml('kind: post\ntransitions:\n  s: {"a": ["b", s], "_": ["_", h]}\n  t: {"a": ["a", s]}\n')


def test_load_machine_resolves_names_files_and_strings(tmp_path):
    assert load_machine("bb4").name == "bb4"
    f = tmp_path / "binc.yaml"
    f.write_text(EXAMPLE_YAML)
    assert load_machine(str(f)).delta == library_machine("binc").delta
    assert load_machine("1RB1LB_1LA1RZ").states == ("A", "B", "Z")
    with pytest.raises(AttnlabError, match="unknown machine"):
        load_machine("nosuchmachine")
    with pytest.raises(AttnlabError, match="not found"):
        load_machine(str(tmp_path / "missing.yaml"))


def test_library_parses():
    for name in LIBRARY:
        m = library_machine(name)
        m.encode(LIBRARY[name].input)  # the example input is in the alphabet
