"""The closed certificate (issue 17, item 3): lemma B over every window of every length, the network on every
(token, front symbol) pair, and the same check rounded to p bits."""

import itertools

import numpy as np
import pytest

from attnlab.core.errors import AttnlabError
from attnlab.machines.certificate import certify
from attnlab.machines.compile import compile_pm
from attnlab.machines.executors import TableExecutor, make_executor
from attnlab.machines.library import library_machine
from attnlab.machines.network import Format, network_logits
from attnlab.machines.post import tm_to_pm
from attnlab.machines.simulate import token_marks

P2, P3 = Format(1, 0), Format(2, 0)  # p = 1 + e + m


def compiled(name, window):
    tr = tm_to_pm(library_machine(name))
    return tr, compile_pm(tr.pm, window)


def broken_rpe(model):
    """The RPE with the intermediate value above the oldest: an intermediate token wins the hardmax."""
    model.weights["rpe"][:] = [0, 2, 1]
    return model


def exact_stream(tr, model, n):
    """The prompt and the first ``n`` tokens of the intact network's run."""
    tm = library_machine("bb4")
    prompt = model.prompt(*tr.initial_config(tm.encode(""), model.window))
    ex = TableExecutor(model, prompt, token_marks(tr, model))
    out = list(prompt)
    while len(out) < model.window + n and not ex.halted:
        ex.advance(1, 1)
        out.append(ex.cur)
    return np.array(out)


def test_intact_network_is_complete_at_every_window():
    _, model = compiled("bb4", 13)
    cert = certify(model)
    assert cert.complete and cert.failures() == []
    assert cert.lemma_b_gap == 1.0 and cert.lemma_b_all_gap == 1.0 and cert.rpe_closed_form
    assert cert.value_by_symbol and cert.head_window_free and cert.pairs == model.vocab_size * model.n_symbols
    big = certify(model.with_window(100_000))
    assert big.complete and np.array_equal(big.table, cert.table)


def test_broken_rpe_fails_certify_and_is_refused_by_table():
    tr, good = compiled("bb4", 13)
    stream = exact_stream(tr, good, 60)
    bad = broken_rpe(compiled("bb4", 13)[1])
    cert = certify(bad)
    assert not cert.complete and not cert.lemma_b and not cert.lemma_b_all_windows
    assert cert.mismatches == 0  # the FFN is intact: only lemma B catches it
    with pytest.raises(AttnlabError, match="table executor refused.*lemma B"):
        make_executor("table", bad, stream[:13].tolist(), token_marks(tr, bad))
    # what the certificate caught is real: the network itself leaves the run
    W = bad.window
    windows = np.stack([stream[i:i + W] for i in range(len(stream) - W)])
    assert np.any(network_logits(bad, windows).argmax(1) != stream[W:])
    assert np.array_equal(network_logits(good, windows).argmax(1), stream[W:])


def test_broken_rpe_at_window_2_is_caught_by_the_closed_form():
    """At W = 2 there is no intermediate position, so lemma B holds at the compiled W; at W >= 3 it fails."""
    bad = broken_rpe(compiled("bb4", 2)[1])
    cert = certify(bad)
    assert cert.lemma_b and not cert.lemma_b_all_windows and not cert.complete
    assert not certify(bad.with_window(3)).lemma_b


@pytest.mark.parametrize("fmt", [None, P3])
def test_certificate_equals_the_network_on_every_window(fmt):
    """The reduction is exact: at W = 3 every one of the V^3 windows of BB2 gives table[current][front
    symbol], exactly and in 3-bit arithmetic; with the broken RPE some window does not."""
    _, model = compiled("bb2", 3)
    rnd = fmt.rounder() if fmt else None
    cert = certify(model, fmt)
    assert cert.complete
    V, n_sym = model.vocab_size, model.n_symbols
    windows = np.array(list(itertools.product(range(V), repeat=3)))
    live = cert.table[windows[:, -1], 0] >= 0
    logits = network_logits(model, windows[live], rnd=rnd)
    assert np.array_equal(logits.argmax(1), cert.table[windows[live, -1], windows[live, 0] % n_sym])
    assert np.all(network_logits(model, windows[~live], rnd=rnd) == 0)
    bad = broken_rpe(model)
    assert np.any(network_logits(bad, windows[live]).argmax(1)
                  != cert.table[windows[live, -1], windows[live, 0] % n_sym])


def test_rounded_certificate_p3_passes_p2_fails():
    _, model = compiled("bb4", 13)
    assert certify(model, P3).complete and certify(model, Format(1, 1)).complete
    p2 = certify(model, P2)
    assert not p2.complete and p2.mismatches > 0  # 1 rounds to 0 (ties to even): no unit fires


@pytest.mark.parametrize("name", ["bb2", "bb4", "binc", "rotate"])
def test_smallest_precision_is_3_bits(name):
    machine = library_machine(name)
    pm = machine if name == "rotate" else tm_to_pm(machine).pm
    cert = certify(compile_pm(pm, 5), precision=True)
    assert cert.complete and cert.smallest_bits == 3
    by_bits = {b: [r["complete"] for r in cert.precision if r["bits"] == b] for b in (2, 3)}
    assert by_bits == {2: [False], 3: [True, True]}  # p=2: e1m0; p=3: e1m1 and e2m0


def test_certificate_reused_across_windows_only_when_complete():
    """A complete certificate covers every W, so the table executor accepts it for another window."""
    tr, model = compiled("bb4", 13)
    cert = certify(model.with_window(2))
    stream = exact_stream(tr, model, 0)
    ex = make_executor("table", model, stream.tolist(), token_marks(tr, model), cert)
    ex.advance(10**9, 10**9)
    assert ex.halted and ex.tokens == 804


@pytest.mark.parametrize("fmt", [P2, Format(1, 1), P3, Format(3, 2)])
def test_rounded_matmul_shortcut_equals_the_tree(fmt):
    """matmul_tree skips the tree for outputs with one nonzero product; the values equal the full tree's."""
    from attnlab.machines.network import matmul, matmul_tree, round_sparse, tree_sum

    rng = np.random.default_rng(0)
    rnd = fmt.rounder()
    for density in (0.02, 0.1, 0.5):
        a = rng.integers(-3, 4, (120, 37)) * (rng.random((120, 37)) < density) * 0.5
        b = rng.integers(-3, 4, (37, 53)) * (rng.random((37, 53)) < density) * 1.5
        tree = tree_sum(round_sparse(a[:, :, None] * b, rnd), axis=1, rnd=rnd)
        assert np.array_equal(matmul_tree(a, b, rnd), tree)
        assert np.array_equal(matmul(np.concatenate([a, a[:7]]), b, rnd), np.concatenate([tree, tree[:7]]))
