import random

import numpy as np
import pytest

from attnlab.machines.certificate import certify
from attnlab.machines.compile import compile_pm
from attnlab.machines.executors import DenseExecutor, make_executor
from attnlab.machines.library import LIBRARY, LONG, library_machine
from attnlab.machines.machine import PostMachine, TuringMachine
from attnlab.machines.post import tm_to_pm
from attnlab.machines.reference import PMRun, run_tm
from attnlab.machines.registry import NETWORK_EXECUTORS
from attnlab.machines.simulate import minimal_window, run_machine, token_marks

TMS = [n for n in LIBRARY if n not in LONG and n != "rotate"]


def random_tm(rng: random.Random) -> TuringMachine:
    """2-5 states, 2-4 symbols; each entry halts with probability 1/8."""
    n_q, k = rng.randint(2, 5), rng.randint(2, 4)
    delta = {(q, a): (rng.randrange(k), rng.choice((-1, 1)), rng.randrange(n_q))
             for q in range(n_q) for a in range(k) if rng.random() > 1 / 8}
    return TuringMachine(f"rand{n_q}x{k}", tuple(f"q{i}" for i in range(n_q)), tuple(str(i) for i in range(k)), delta)


def token_stream(name, model, tr, state, queue, n):
    ex = make_executor(name, model, model.prompt(state, queue), [1] * model.vocab_size)
    out = []
    for _ in range(n):
        if ex.advance(1, 1) == 0:
            break
        out.append(ex.cur)
    return out


@pytest.mark.parametrize("name", ["bb4", "pal", "parens", "utm"])
def test_token_for_token_against_the_reference_pm(name):
    tm = library_machine(name)
    tr = tm_to_pm(tm)
    cells = tm.encode(LIBRARY[name].input)
    W = max(minimal_window(tm, cells, 10**6), len(cells) - 1)
    model = compile_pm(tr.pm, W)
    state, queue = tr.initial_config(cells, W)
    ref, want = PMRun(tr.pm, state, queue), []
    for _ in range(400):
        ref.run(1)
        want.append(ref.state * model.n_symbols + ref.queue[-1])
        if ref.halted:
            break
    for ex in NETWORK_EXECUTORS:
        assert token_stream(ex, model, tr, state, queue, len(want)) == want, ex


@pytest.mark.parametrize("name", TMS)
@pytest.mark.parametrize("executor", NETWORK_EXECUTORS)
def test_library_runs_exact(name, executor):
    tm = library_machine(name)
    ref = run_tm(tm, tm.encode(LIBRARY[name].input))
    r = run_machine(tm, LIBRARY[name].input, executor=executor, check_every=1 if executor != "dense" else 50)
    assert r.mismatches == 0 and r.error is None and r.halted
    assert (r.tm_steps, r.tape, r.nonblank, r.final_state) == (ref.steps, ref.tape_string(), ref.nonblank(),
                                                               tm.states[ref.state])
    assert r.tokens == (ref.steps - ref.left_moves) + r.window * ref.left_moves + 1


def test_random_machines_every_executor_equals_the_reference():
    """Property test: 300 random machines (2-5 states, 2-4 symbols), up to 150 TM steps each, checked
    at every TM step; dense on every fifth machine (it costs O(W) per token)."""
    rng = random.Random(1234)
    halted = 0
    for i in range(300):
        tm = random_tm(rng)
        text = "".join(rng.choice(tm.symbols) for _ in range(rng.randint(0, 4)))
        ref = run_tm(tm, tm.encode(text), 150)
        halted += ref.halted
        cert = certify(compile_pm(tm_to_pm(tm).pm, 2))  # complete: valid at every W, so for every run below
        assert cert.complete
        # the native executors are held equal to table and kv token for token below
        for executor in (e for e in NETWORK_EXECUTORS if e in ("table", "kv") or (e == "dense" and i % 5 == 0)):
            r = run_machine(tm, text, executor=executor, max_steps=150, certificate=cert)
            assert r.mismatches == 0, (i, executor, r.error)
            assert (r.tm_steps, r.halted, r.tape) == (ref.steps, ref.halted, ref.tape_string()), (i, executor)
    assert 30 < halted < 290  # both halting and non-halting machines were exercised


@pytest.mark.parametrize("executor", NETWORK_EXECUTORS)
@pytest.mark.parametrize("window", [10, 12])
def test_too_small_window_is_reported(executor, window):
    r = run_machine(library_machine("bb4"), "", window=window, executor=executor)
    assert r.mismatches == 1 and not r.halted and r.error.startswith("window too small")


def test_too_small_window_detected_with_sparse_checks():
    r = run_machine(library_machine("bcount"), "#00000", window=5, check_every=1000)
    assert r.mismatches == 1 and "window too small" in r.error


def test_dense_batched_matches_table():
    tm = library_machine("pal")
    tr = tm_to_pm(tm)
    words = ["abba", "abab", "aaaa", "babab", "bb", "abaaba", "", "aab"]
    W = 7
    model = compile_pm(tr.pm, W)
    marks = token_marks(tr, model)
    prompts = [model.prompt(*tr.initial_config(tm.encode(w), W)) for w in words]
    dense = DenseExecutor(model, np.array(prompts), marks)
    tokens = dense.run_batch(10_000)
    final = dense.window_batch()
    for b, p in enumerate(prompts):
        ex = make_executor("table", model, p, marks)
        while not ex.halted:
            ex.advance(10**6, 10**6)
        assert tokens[b] == ex.tokens and final[b].tolist() == ex.window() and dense.cur_b[b] == ex.cur


def test_non_halting_reports_not_halted():
    r = run_machine(library_machine("bcount"), "#000", executor="kv", max_steps=20)
    assert not r.halted and r.tm_steps == 20 and r.mismatches == 0


@pytest.mark.slow
def test_bcount_20_on_kv():
    """A long run: 46,137,324 tokens at W=21, zero mismatches."""
    r = run_machine(library_machine("bcount"), "#" + "0" * 20, executor="kv", check_every=4096)
    assert r.halted and r.mismatches == 0 and r.tm_steps == 2**22 - 1 and r.tokens == 46_137_324


def test_table_batch_matches_single_runs():
    from attnlab.machines.executors import table_batch

    tm = library_machine("bcount")
    tr = tm_to_pm(tm)
    rng = random.Random(5)
    texts = ["#" + "".join(rng.choice("01") for _ in range(5)) for _ in range(16)]
    model = compile_pm(tr.pm, 6)
    cert = certify(model)
    marks = token_marks(tr, model)
    prompts = np.array([model.prompt(*tr.initial_config(tm.encode(t), 6)) for t in texts])
    tokens, windows, cur = table_batch(model, cert, prompts, marks, 10**6)
    for b, p in enumerate(prompts.tolist()):
        ex = make_executor("table", model, p, marks, cert)
        ex.advance(10**9, 10**9)
        assert ex.halted and tokens[b] == ex.tokens and windows[b].tolist() == ex.window() and cur[b] == ex.cur


@pytest.mark.parametrize("executor", ["kv", "kv-native"])
def test_kv_refuses_weights_outside_the_compiled_form(executor):
    from attnlab.core.errors import AttnlabError

    tm = library_machine("bb2")
    tr = tm_to_pm(tm)
    model = compile_pm(tr.pm, 3)
    prompt = model.prompt(*tr.initial_config([], 3))
    model.weights["w_k"][0, 0] = 1  # keys now carry content: the oldest slot is no longer guaranteed
    with pytest.raises(AttnlabError, match="RPE-only hardmax"):
        make_executor(executor, model, prompt, token_marks(tr, model))


def test_dense_at_window_100000_matches_table():
    """The dense executor attends over all 100,000 keys per token: a prefix of a BB4 run agrees."""
    tm = library_machine("bb4")
    tr = tm_to_pm(tm)
    model = compile_pm(tr.pm, 100_000)
    state, queue = tr.initial_config([], 100_000)
    assert token_stream("dense", model, tr, state, queue, 30) == token_stream("table", model, tr, state, queue, 30)


def test_registry_resolves_every_executor():
    from attnlab.core.errors import AttnlabError
    from attnlab.machines.executors import Executor
    from attnlab.machines.registry import EXECUTORS, executor_class

    assert set(NETWORK_EXECUTORS) == {name for name, spec in EXECUTORS.items() if spec.target}
    assert set(NETWORK_EXECUTORS) == {"table", "kv", "table-native", "kv-native", "dense"}
    for name in NETWORK_EXECUTORS:
        cls = executor_class(name)
        assert issubclass(cls, Executor) and cls.name == name
    with pytest.raises(AttnlabError, match="unknown executor 'gpu'"):
        executor_class("gpu")


NATIVE = {"table-native": "table", "kv-native": "kv"}


def same_run(native, model, prompt, marks, rng, max_tokens):
    """Drive the native executor and its pure-Python twin with the same random ``advance`` calls (1-5 marked
    tokens each): every call's count, the token stream, the final window, token, halt and token count agree."""
    from attnlab.machines.simulate import advance

    cert = certify(model) if native == "table-native" else None
    pure, fast = (make_executor(name, model, prompt, marks, cert) for name in (NATIVE[native], native))
    streams: tuple[list[int], list[int]] = ([], [])
    while not pure.halted and pure.tokens < max_tokens:
        count, budget = rng.randint(1, 5), max_tokens - pure.tokens
        assert advance(pure, count, budget, streams[0]) == advance(fast, count, budget, streams[1])
    assert streams[0] == streams[1] and len(streams[0]) == pure.tokens
    assert (fast.window(), fast.cur, fast.halted, fast.tokens) == (pure.window(), pure.cur, pure.halted, pure.tokens)
    return pure


@pytest.mark.parametrize("native", NATIVE)
def test_native_equals_pure_python_on_random_machines(native):
    """300 random machines (2-5 states, 2-4 symbols), random windows 1-8, up to 300 tokens each."""
    rng = random.Random(4321)
    halted = 0
    for _ in range(300):
        tm = random_tm(rng)
        tr = tm_to_pm(tm)
        cells = tm.encode("".join(rng.choice(tm.symbols) for _ in range(rng.randint(0, 4))))
        W = max(rng.randint(1, 8), len(cells))
        model = compile_pm(tr.pm, W)
        prompt = model.prompt(*tr.initial_config(cells, W))
        halted += same_run(native, model, prompt, token_marks(tr, model), rng, 300).halted
    assert 30 < halted < 290  # halting and non-halting runs both compared


@pytest.mark.parametrize("native", NATIVE)
@pytest.mark.parametrize("name", LIBRARY)
def test_native_equals_pure_python_on_library_machines(native, name):
    """Every library machine on its library input at its minimal window: the first 20,000 tokens."""
    machine = library_machine(name)
    cells = machine.encode(LIBRARY[name].input)
    if isinstance(machine, PostMachine):  # the queue is the input padded to W; only halting tokens are marked
        W = max(len(cells), 1)
        model = compile_pm(machine, W)
        prompt = model.prompt(machine.start, machine.initial_queue(cells, W))
        marks = [2 if t // model.n_symbols in machine.halting else 0 for t in range(model.vocab_size)]
    else:
        tr = tm_to_pm(machine)
        W = max(minimal_window(machine, cells, 10**5), len(cells) - 1)
        model = compile_pm(tr.pm, W)
        prompt, marks = model.prompt(*tr.initial_config(cells, W)), token_marks(tr, model)
    same_run(native, model, prompt, marks, random.Random(name), 20_000)


def test_native_table_refuses_an_incomplete_certificate():
    from attnlab.core.errors import AttnlabError

    tr = tm_to_pm(library_machine("bb4"))
    model = compile_pm(tr.pm, 13)
    model.weights["rpe"][:] = [0, 2, 1]  # an intermediate token wins the hardmax: lemma B fails
    with pytest.raises(AttnlabError, match="table executor refused.*lemma B"):
        make_executor("table-native", model, model.prompt(*tr.initial_config([], 13)), token_marks(tr, model))


def test_native_kernels_without_a_writable_cache(tmp_path):
    """A cache directory that cannot be created costs only the compile: the kernels still run (a fresh process,
    since numba reads its cache directory once)."""
    import os
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("")
    code = ("from attnlab.machines.simulate import run_machine\n"
            "from attnlab.machines.library import library_machine\n"
            "r = run_machine(library_machine('bb4'), '', executor='kv-native')\n"
            "s = run_machine(library_machine('bb4'), '', executor='table-native')\n"
            "print(r.tm_steps, r.mismatches, s.tm_steps, s.mismatches)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(blocker / "numba"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["107", "0", "107", "0"]
