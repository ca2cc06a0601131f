import pytest

from attnlab.machines.library import LIBRARY, LONG, library_machine
from attnlab.machines.post import expected_tokens, tm_to_pm
from attnlab.machines.reference import PMRun, run_tm
from attnlab.machines.simulate import minimal_window, unroll

TMS = [n for n in LIBRARY if n not in LONG and n != "rotate"]


def pm_run(name, text, window):
    tm = library_machine(name)
    tr = tm_to_pm(tm)
    state, queue = tr.initial_config(tm.encode(text), window)
    return tm, tr, PMRun(tr.pm, state, queue).run(10**7)


@pytest.mark.parametrize("name", TMS)
@pytest.mark.parametrize("extra", [0, 1, 7])
def test_cost_formula_and_final_tape(name, extra):
    """Lemma A: PM steps = #R + W #L + 1, and the decoded final configuration is the TM's."""
    tm = library_machine(name)
    cells = tm.encode(LIBRARY[name].input)
    ref = run_tm(tm, cells)
    W = max(minimal_window(tm, cells, 10**7), len(cells) - 1) + extra
    _, tr, pm = pm_run(name, LIBRARY[name].input, W)
    assert pm.halted
    assert pm.steps == expected_tokens(ref.steps - ref.left_moves, ref.left_moves, W)
    q, cyclic, halted = tr.decode(pm.state, list(pm.queue))
    assert halted and q == ref.state
    assert unroll(cyclic, ref.head, ref.hi) == [ref.cell(p) for p in range(ref.hi - W, ref.hi + 1)]


def test_too_small_window_wraps():
    """Negative test: BB4 at W=10 or 12 halts with 8 or 10 ones instead of 13."""
    for W, ones in ((10, 8), (12, 10)):
        _, tr, pm = pm_run("bb4", "", W)
        _, cyclic, halted = tr.decode(pm.state, list(pm.queue))
        assert halted and sum(1 for c in cyclic if c) == ones


def test_pm_is_window_independent_and_sized():
    tr = tm_to_pm(library_machine("bb4"))
    k, q = 2, 5
    assert len(tr.pm.symbols) == 2 * k
    assert len(tr.pm.states) == 2 * q * k + len(tr.halt_info) == 22  # Z halts on both symbols
    assert tr.pm.halting == frozenset(range(20, 22))
