import numpy as np
import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.machines.certificate import certify
from attnlab.machines.compile import compile_pm, load_compiled
from attnlab.machines.library import LIBRARY, library_machine
from attnlab.machines.module import MachineTransformer, load_module
from attnlab.machines.network import Format, network_logits
from attnlab.machines.post import tm_to_pm
from attnlab.machines.precision import bcount_stream, min_beta, teacher_forced_errors


def bb4(window=13):
    return compile_pm(tm_to_pm(library_machine("bb4")).pm, window)


def test_sizes_and_integer_weights():
    m = bb4()
    assert (m.vocab_size, m.d_model, m.d_ffn) == (88, 30, 80)
    # embed, W_Q, W_K, rpe, W_V, W_O, W_1, b_1, then the factored output: W_2 (80, 4 + 22), U (26, 88)
    assert m.params == 88 * 30 + 30 + 30 + 3 + 30 * 4 + 4 * 30 + 30 * 80 + 80 + 80 * 26 + 26 * 88
    assert m.bits_per_param == 2 and m.model_bits == 2 * m.params
    for w in m.weights.values():
        assert set(np.unique(w)) <= {-1, 0, 1}
    # only the RPE's window moves with W: every weight is identical
    big = m.with_window(100_000)
    assert all(np.array_equal(big.weights[k], m.weights[k]) for k in m.weights) and big.params == m.params


@pytest.mark.parametrize("name", [n for n in LIBRARY if n != "bb5"])
def test_certificate_exact(name):
    machine = library_machine(name)
    pm = machine if name == "rotate" else tm_to_pm(machine).pm
    cert = certify(compile_pm(pm, 4))
    assert cert.complete and cert.mismatches == 0 and cert.min_margin == 1.0 and cert.terminal_ok


def test_certificate_catches_a_corrupted_weight():
    m = bb4()
    m.weights["w2"][3] = np.roll(m.weights["w2"][3], 1)  # unit 3 now raises the wrong token
    cert = certify(m)
    assert not cert.complete and cert.mismatches >= 1 and cert.lemma_b_all_windows


def test_safetensors_round_trip_and_module(tmp_path):
    m = bb4()
    m.save(tmp_path / "bb4")
    back = load_compiled(tmp_path / "bb4")
    assert back.window == 13 and back.pm.delta == m.pm.delta
    assert all(np.array_equal(back.weights[k], m.weights[k]) for k in m.weights)
    model, stream = bcount_stream(6, 60)
    module = load_module_from(model, tmp_path)
    assert isinstance(module, torch.nn.Module)
    logits = module(torch.tensor(stream[None]))[0].numpy()
    W = model.window
    want = network_logits(model, np.stack([stream[i:i + W] for i in range(len(stream) - W + 1)]))
    assert np.array_equal(logits[W - 1:], want)
    assert np.array_equal(logits[W - 1:-1].argmax(-1), stream[W:])  # the module generates the run


def load_module_from(model, tmp_path):
    model.save(tmp_path / "m")
    return load_module(tmp_path / "m")


def test_load_errors(tmp_path):
    with pytest.raises(AttnlabError, match="not a compiled machine"):
        load_compiled(tmp_path)


def test_module_hooks_see_the_front_block():
    """A forward hook on the attention output sees the FRONT block: the oldest token's symbol."""
    model, stream = bcount_stream(5, 30)
    module = MachineTransformer(model)
    seen = {}
    module.w_o.register_forward_hook(lambda mod, inp, out: seen.setdefault("attn", out))
    module(torch.tensor(stream[None]))
    front0, n = model.blocks["FRONT"]
    got = seen["attn"][0, 4:, front0:front0 + n].argmax(-1).numpy()
    assert np.array_equal(got, stream[:-4] % model.n_symbols)


def test_precision_p3_exact_p2_not():
    for W in (4, 64):
        model, stream = bcount_stream(W, 2 * W + 16)
        assert teacher_forced_errors(model, stream, rnd=Format(2, 0).rounder()) == 0
        assert teacher_forced_errors(model, stream, rnd=Format(1, 0).rounder()) > 0


def test_softmax_needs_log_w():
    for W in (4, 16, 64):
        model, stream = bcount_stream(W, 2 * W + 16)
        beta = min_beta(model, stream)
        assert abs(beta - np.log(W - 1)) < 0.05  # e^β > W - 1: β grows like ln(W - 1)


@pytest.mark.parametrize("name", ["bb4", "utm"])
def test_factored_output_layer(name):
    """W_2 U scores τ(s, c) 2, a token sharing its state or symbol 1, every other 0 (the same argmax as a dense
    one-hot W_2); U is the embedding's SYM and ST blocks; sizes as compiled_size predicts, well below dense."""
    from attnlab.machines.compile import compiled_size

    pm = tm_to_pm(library_machine(name)).pm
    m = compile_pm(pm, 5)
    n_sym, n_st = m.n_symbols, len(pm.states)
    scores = m.weights["w2"].astype(np.int64) @ m.weights["unembed"]
    for u, (s, c) in enumerate(m.units):
        s2, c2 = pm.delta[(s, c)]
        want = np.array([(t // n_sym == s2) + (t % n_sym == c2) for t in range(m.vocab_size)])
        assert np.array_equal(scores[u], want) and scores[u].argmax() == s2 * n_sym + c2
    assert np.array_equal(m.weights["unembed"], m.weights["embed"][:, :n_sym + n_st].T)
    size = compiled_size(n_st, n_sym, len(pm.halting))
    assert size["params"] == m.params and size["output_params"] == m.weights["w2"].size + m.weights["unembed"].size
    assert size["dense_output_params"] == m.d_ffn * m.vocab_size > size["output_params"]
