import itertools
import random

import pytest

from attnlab.machines.library import LIBRARY, library_machine
from attnlab.machines.reference import PMRun, run_tm


def run(name, text, max_steps=10**7):
    tm = library_machine(name)
    return run_tm(tm, tm.encode(text), max_steps)


@pytest.mark.parametrize("name, steps, ones, span, lefts", [
    ("bb1", 1, 1, 2, 0), ("bb2", 6, 4, 4, 3), ("bb3", 21, 5, 5, 10), ("bb3sigma", 14, 6, 6, 6),
    ("bb4", 107, 13, 14, 58),
])
def test_busy_beavers(name, steps, ones, span, lefts):
    r = run(name, "")
    assert r.halted and r.steps == steps and r.nonblank() == ones and r.span == span and r.left_moves == lefts


@pytest.mark.slow
def test_bb5():
    r = run("bb5", "", 10**8)
    assert r.halted and r.steps == 47_176_870 and r.nonblank() == 4098 and r.span == 12_289
    from attnlab.machines.parse import parse_bbchallenge

    r = run_tm(parse_bbchallenge("1RB1LC_1RC1RB_1RD0LE_1LA1LD_---0LA"), [], 10**8)  # bbchallenge's spelling
    assert r.halted and r.steps == 47_176_870 and r.nonblank() == 4098


@pytest.mark.parametrize("k", range(1, 13))
def test_binary_increment_on_ones(k):
    r = run("binc", "1" * k)
    assert r.steps == 2 * k + 2 and r.tape_string() == "1" + "0" * k


def test_binary_increment_values():
    for v in range(1, 64):
        r = run("binc", format(v, "b"))
        assert int(r.tape_string(), 2) == v + 1


def test_palindromes_closed_form():
    for n in range(0, 9):
        for word in itertools.product("ab", repeat=n):
            w = "".join(word)
            r = run("pal", w)
            pal = w == w[::-1]
            assert r.tm.states[r.state] == ("ACC" if pal else "REJ")
            if pal:
                assert r.steps == (n + 1) * (n + 2) // 2
    assert run("pal", "abab").steps == 6 and run("pal", "a" * 20).steps == 231


@pytest.mark.parametrize("n", range(0, 9))
def test_copy(n):
    r = run("copy", "1" * n)
    assert r.steps == 2 * (n + 1) ** 2 and r.tape_string() == ("1" * n + "_" + "1" * n if n else "")


@pytest.mark.parametrize("k", range(1, 11))
def test_binary_counter(k):
    r = run("bcount", "#" + "0" * k)
    assert r.steps == 2 ** (k + 2) - 1 and r.left_moves == 2 ** (k + 1) - 1 and r.span == k + 2


def test_unary_addition():
    for a, b in itertools.product(range(1, 6), range(1, 6)):
        r = run("uadd", "1" * a + "0" + "1" * b)
        assert r.tape_string() == "1" * (a + b) and r.steps == a + b + 3


@pytest.mark.parametrize("text, verdict, steps", [
    ("B()((()(()))())E", "T", 81), ("B(())E", "T", 19), ("B())E", "F", 9), ("B(()E", "F", 10),
    ("B(((((((())))))))E", "T", 163),
])
def test_parentheses(text, verdict, steps):
    r = run("parens", text)
    assert r.tm.states[r.state] == verdict and r.steps == steps


def test_parentheses_against_a_counter():
    rng = random.Random(0)
    for _ in range(200):
        s = "".join(rng.choice("()") for _ in range(rng.randint(0, 10)))
        depth, ok = 0, True
        for ch in s:
            depth += 1 if ch == "(" else -1
            ok &= depth >= 0
        assert run("parens", "B" + s + "E").tm.states[run("parens", "B" + s + "E").state] == \
            ("T" if ok and depth == 0 else "F")


def test_universal_machine_golden():
    r = run("utm", LIBRARY["utm"].input)  # golden values frozen from this interpreter (no published count)
    assert r.halted and r.steps == 1893 and r.span == 52 and r.tape_string().endswith("yAAAA")
    r = run("utm", LIBRARY["utm"].input.replace("yyAyyAyy", "yyAyyAyyAyyAyy"))  # five a2: another program
    assert r.halted and r.steps == 3865 and r.span == 69


def test_step_limit_and_no_step_at_halt():
    r = run("bb4", "", 50)
    assert not r.halted and r.steps == 50
    r.run(10**6)
    assert r.halted and r.steps == 107
    r.run(10)
    assert r.steps == 107  # a halted machine takes no more steps


def test_post_machine_reference():
    pm = library_machine("rotate")
    r = PMRun(pm, pm.start, pm.encode("ab_ab")).run(100)
    assert r.halted and r.steps == 3 and r.queue_string() == "abba_"
