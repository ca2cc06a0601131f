"""The space characterisation (machines.space, `attnlab machines space`): exact at W = s(n) - 1 and above,
wrong below, with the step where the simulation departs."""

import json

import pytest

from attnlab.machines.library import library_machine
from attnlab.machines.reference import run_tm
from attnlab.machines.space import run_at_window, threshold, window_sweep


def test_bb4_exact_at_the_threshold_wrong_one_below():
    tm = library_machine("bb4")
    sweep = {o.window: o for o in window_sweep(tm, "", offsets=(-1, 0, 1))}
    assert set(sweep) == {12, 13, 14} and all(o.space == 14 for o in sweep.values())
    for W in (13, 14):  # s(n) - 1 and the paper's window s(n)
        o = sweep[W]
        assert o.exact and o.first_mismatch is None and o.first_divergence is None and o.overflow is None
        assert (o.halted, o.tm_steps, o.tape, o.nonblank) == (True, 107, "10111111111111", 13)
    below = sweep[12]
    assert not below.exact and below.overflow is not None and below.first_mismatch is not None
    # the run outgrows the 13-cell cyclic tape before the reference halts, and departs from then on
    assert below.overflow <= below.first_mismatch <= 107
    assert (below.halted, below.tm_steps, below.nonblank) != (True, 107, 13)
    t = threshold(list(sweep.values()))
    assert (t["space"], t["construction_threshold"], t["paper_window"], t["measured_threshold"]) == (14, 13, 14, 13)
    assert t["exact_at_and_above"] and t["failing_below"] == [12] and t["exact_below"] == []


def test_a_run_that_fits_is_exact_at_every_window_above():
    tm = library_machine("binc")
    ref = run_tm(tm, tm.encode("1011"))
    for W in range(ref.span - 1, ref.span + 3):
        o = run_at_window(tm, "1011", W, executor="kv")
        assert o.exact and o.tape == ref.tape_string() == "1100" and o.tokens == (8 - 4) + W * 4 + 1


def test_space_bound_is_sufficient_not_necessary():
    """pal erases what it has read, so on abba it is exact one below s(n) - 1: the run visits 5 cells but
    never reads a cell that aliases a non-blank one (reported in docs/machines.md, not hidden)."""
    o = run_at_window(library_machine("pal"), "abba", 3)
    assert o.space == 5 and o.overflow is not None and o.exact and o.final_state == "ACC"


def test_window_that_cannot_hold_the_input_is_left_out():
    windows = [o.window for o in window_sweep(library_machine("bcount"), "#0000", offsets=(-3, -1, 0))]
    assert windows == [4, 5]  # W = 2 cannot hold the 5 input cells


def test_cli_space_json_and_files(run_cli, tmp_path):
    rc, out, err = run_cli("machines", "space", "bb2", "--below", "2", "--above", "0", "--json",
                           "-o", str(tmp_path / "sp"))
    assert rc == 0, err
    d = json.loads(out)
    assert [r["window"] for r in d["runs"]] == [1, 2, 3] and d["exact_at_and_above"]
    assert [r["exact"] for r in d["runs"]] == [False, False, True]
    assert d["thresholds"][0]["measured_threshold"] == 3 and d["thresholds"][0]["failing_below"] == [1, 2]
    saved = json.loads((tmp_path / "sp" / "space.json").read_text())
    assert saved["runs"] == d["runs"]
    md = (tmp_path / "sp" / "space.md").read_text()
    assert "attnlab machines space bb2 --below 2 --above 0" in md and md.count("| `bb2` |") == 3


@pytest.mark.parametrize("argv", [["space", "bb2", "--below", "-1"], ["space", "rotate"],
                                  ["space", "bb2", "-o", "/dev/null/x"]])
def test_cli_space_bad_input_exit_2(run_cli, argv):
    rc, _, err = run_cli("machines", *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
