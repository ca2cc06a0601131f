"""The export is self-contained and runs in standard runtimes: the generic driver, reading only the folder,
reproduces `run`'s token stream token for token in onnxruntime and in torch SDPA (float32 and bfloat16)."""

import json
import math

import numpy as np
import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.machines.artifact import build_export, compiled_weights, export_weights, write_export
from attnlab.machines.compile import compile_pm, load_compiled
from attnlab.machines.library import LIBRARY, LONG, library_machine
from attnlab.machines.post import tm_to_pm
from attnlab.machines.replay import compare, replay
from attnlab.machines.sdpa import SoftmaxMachine
from attnlab.machines.simulate import run_machine
from attnlab.machines.softmax import exact_inverse_temperature

SLOW = ("utm", *sorted(LONG))  # utm: 48,044 tokens at W=51; LONG: > 10^9 tokens (library.LONG)
SHORT = [n for n in LIBRARY if n not in SLOW]
RUNTIMES = [("onnx", "float32"), ("torch", "float32"), ("torch", "bfloat16")]


def exported(tmp_path_factory, name, max_steps=10**7, window=None):
    """(folder with model.onnx + model.safetensors, prompt + generated tokens of `run`, the run's result)."""
    machine, text = library_machine(name), LIBRARY[name].input
    trace = []
    result = run_machine(machine, text, window=window, executor="kv", max_steps=max_steps, trace=trace)
    export = build_export(machine, text, result.window, max_steps)
    folder = tmp_path_factory.mktemp(name)
    write_export(folder, export.model, export.config, "onnx")
    write_export(folder, export.model, export.config, "hf")
    return folder, trace, result


@pytest.fixture(scope="module")
def short_exports(tmp_path_factory):
    return {name: exported(tmp_path_factory, name) for name in SHORT}


def check_replay(folder, trace, result, runtime, dtype, max_tokens=None):
    W = result.window
    tokens = trace[W:]
    header, footer = {"prompt": trace[:W]}, {"halted": result.halted}
    rep = replay(folder, runtime, dtype, max_tokens=max_tokens or len(tokens) + 1)
    assert compare(rep, header, tokens, footer) is None
    summary = rep.summary()
    assert summary["final_state"] == result.final_state and summary["halted"] == result.halted
    if "tm_steps" in summary:
        assert summary["tm_steps"] == result.tm_steps and summary["nonblank"] == result.nonblank


@pytest.mark.parametrize("runtime, dtype", RUNTIMES)
@pytest.mark.parametrize("name", SHORT)
def test_replay_equals_run(short_exports, name, runtime, dtype):
    check_replay(*short_exports[name], runtime, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("runtime, dtype", RUNTIMES)
def test_replay_equals_run_universal_machine(tmp_path_factory, runtime, dtype):
    check_replay(*exported(tmp_path_factory, "utm"), runtime, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_replay_equals_run_bb5_prefix(tmp_path_factory, dtype):
    """BB5 at its W = 12,288 (2.9e11 tokens in all): the first 3,000 generated tokens. The ONNX graph computes
    all W queries per token (O(W^2)), so BB5 runs on the torch decoding step (one query, O(W)) only."""
    folder, trace, result = exported(tmp_path_factory, "bb5", max_steps=40, window=12_288)
    W, n = result.window, 3000
    assert W == 12_288 and len(trace) > W + n
    rep = replay(folder, "torch", dtype, max_tokens=n)
    assert rep.tokens == trace[W:W + n] and not rep.halted


def test_config_is_self_contained(tmp_path):
    export = build_export(library_machine("bb4"), "", None)
    config = export.config
    model = export.model
    assert config["window"]["W"] == 13 and config["window"]["cells_visited"] == 14 and config["window"]["halted"]
    assert config["prompt"] == export.prompt and len(export.prompt) == 13
    voc = config["vocabulary"]
    assert voc["size"] == model.vocab_size + 1 == len(voc["tokens"])
    assert config["decoding"]["halt_token"] == model.vocab_size and voc["tokens"][-1] == {"id": 88, "halt": True}
    # records, not joined strings: every token names its state and symbol ids, each a record with fields
    for rec in voc["tokens"][:-1]:
        s, c = divmod(rec["id"], voc["n_symbols"])
        assert (rec["state"], rec["symbol"]) == (s, c) and rec["halting"] == voc["states"][s]["halting"]
    assert {r["kind"] for r in voc["states"]} == {"run", "halt"}
    assert {(r["cell"], r["marked"]) for r in voc["symbols"]} == {("0", False), ("0", True), ("1", False),
                                                                 ("1", True)}
    arch = config["architecture"]
    assert arch["ffn"]["residual"] is False and any("no residual add" in e for e in arch["equations"])
    assert arch["attention"]["softmax"]["inverse_temperature"]["float32"] == exact_inverse_temperature(13, 4,
                                                                                                       "float32")
    write_export(tmp_path, model, config, "safetensors")
    back = load_compiled(tmp_path)
    assert all(np.array_equal(back.weights[k], model.weights[k]) for k in model.weights)


def test_export_weights_add_only_the_halt():
    model = compile_pm(tm_to_pm(library_machine("bb4")).pm, 13)
    w = export_weights(model)
    assert all(set(np.unique(v)) <= {-1, 0, 1} for v in w.values())
    back = compiled_weights(w, model.vocab_size, model.d_ffn)
    assert all(np.array_equal(back[k], model.weights[k]) for k in model.weights)
    halting = sorted(model.pm.halting)
    n_out = model.weights["w2"].shape[1]
    assert w["w2"].shape == (model.d_ffn + len(halting), n_out + 1)
    assert w["w2"][model.d_ffn:, -1].tolist() == [1] * len(halting) and not w["w2"][:model.d_ffn, -1].any()
    assert w["unembed"].shape == (n_out + 1, model.vocab_size + 1)
    assert w["unembed"][:, -1].tolist() == [0] * n_out + [1] and not w["unembed"][-1, :-1].any()


def test_too_small_window_refused():
    with pytest.raises(AttnlabError, match="window too small.*needs --window 13"):
        build_export(library_machine("bb4"), "", 10)


def test_softmax_beta_grows_with_w_and_coarser_formats():
    betas = [exact_inverse_temperature(w, 4, "float32") for w in (2, 13, 1000, 100_000)]
    assert betas == sorted(betas) and betas[1] == math.floor(math.log(12) + math.log(2 ** 25) + 16 * 2 ** -24) + 1
    assert exact_inverse_temperature(13, 4, "bfloat16") < betas[1]  # fewer bits to hide the rest's mass under
    assert exact_inverse_temperature(30_000, 4, "bfloat16") is None  # (1 + 2^-8)^W outgrows the normal range
    assert exact_inverse_temperature(13, 1000, "bfloat16") is None  # |Λ| u/2 > 1: a wrong logit could reach 1


def test_softmax_below_ln_w_fails(short_exports):
    """The module is a real softmax: at β < ln(W - 1) the oldest token loses and the run goes wrong."""
    from safetensors.torch import load_file

    folder, trace, result = short_exports["bb4"]
    config = json.loads((folder / "config.json").read_text())
    W, halt = result.window, config["decoding"]["halt_token"]
    stream = torch.tensor(trace)
    windows = stream.unfold(0, W, 1)[:-1]  # every window of the run and the token after it
    tensors = load_file(str(folder / "model.safetensors"))
    for beta, exact in ((config["architecture"]["attention"]["softmax"]["inverse_temperature"]["float32"], True),
                        (math.log(W - 1) - 1, False)):
        module = SoftmaxMachine(tensors, W, beta, halt)
        with torch.no_grad():
            got = module(windows, last_only=True)[:, -1].argmax(-1)
        assert bool(torch.equal(got, stream[W:])) == exact
