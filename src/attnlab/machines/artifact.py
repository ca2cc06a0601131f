"""The exported machine: a folder that software not written here can run, with nothing left implicit.

``config.json`` states the architecture as equations, the vocabulary as structured records (no names joined
into strings), the prompt for the input, the decoding rule (greedy, with an explicit halt token, and how
tokens map back to Turing machine configurations) and the window with the space bound it was sized for.
Formats (:data:`FORMATS`): ``safetensors`` (int8 weights), ``onnx`` (``model.onnx``, a standard graph with
ONNX ``Hardmax`` attention, for onnxruntime) and ``hf`` (safetensors plus ``modeling_machine.py``, a torch
module on ``scaled_dot_product_attention`` with a provably exact softmax: :mod:`attnlab.machines.sdpa`).

The exported network is the compiled one plus an explicit halt: token id V (one past the compiled
vocabulary), an output dimension HALT read only by its logit, and one FFN unit ReLU(x[ST_h]) per halting state
h writing it, so a halting token is followed by the halt token instead of an all-zero logit vector. Weights
stay in {-1, 0, 1}.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_path, atomic_write_json
from ..core.errors import AttnlabError
from .compile import RPE_TYPES, CompiledTransformer, compile_pm
from .machine import PostMachine, TuringMachine
from .post import tm_to_pm
from .registry import FORMATS  # noqa: F401 (the formats write_export writes)
from .simulate import space_bound, too_small
from .softmax import softmax_spec

CONFIG_FORMAT = "attnlab.machines/3"  # 3: the factored output layer (W_2, then U)
ONNX_OPSET = 17

EQUATIONS = [
    "x_j = E[t_j]  (one-hot token embedding; no positional embedding, no layer norm)",
    "q_i = x_i W_Q,  k_j = x_j W_K,  v_j = x_j W_V",
    "s_ij = q_i (k_j + rpe[type(i - j)]) for 0 <= i - j <= W - 1, where type = oldest if i - j = W - 1 "
    "(first), current if i = j, else intermediate; keys in the future or more than W - 1 back are masked",
    "a_i = hardmax_j s_ij  (one-hot at the first, i.e. oldest, maximum; see attention.softmax for a softmax "
    "that is provably the same)",
    "h_i = x_i + (sum_j a_ij v_j) W_O  (residual add around attention)",
    "y_i = ReLU(h_i W_1 + b_1) W_2  (no residual add around the FFN: y lives in the output space SYM, ST, HALT)",
    "logits_i = y_i U  (unembedding: logit(state s, symbol c) = y[SYM c] + y[ST s]; logit(halt) = y[HALT])",
    "t_{i+1} = argmax logits_i  (unique: the winning logit is 2, or 1 for the halt token, and every other at "
    "least 1 lower)",
]


def export_weights(model: CompiledTransformer) -> dict[str, np.ndarray]:
    """The compiled weights with the explicit halt token, its output dimension and the halt units appended
    (int8)."""
    w, V, U = model.weights, model.vocab_size, model.d_ffn
    n_out = w["w2"].shape[1]
    halting = sorted(model.pm.halting)
    st = model.blocks["ST"][0]
    embed = np.vstack([w["embed"], np.zeros((1, model.d_model), np.int8)])  # the halt token is never read
    w1_halt = np.zeros((model.d_model, len(halting)), np.int8)
    w2 = np.zeros((U + len(halting), n_out + 1), np.int8)
    w2[:U, :n_out] = w["w2"]
    for i, s in enumerate(halting):
        w1_halt[st + s, i] = 1
        w2[U + i, n_out] = 1  # the HALT output dimension
    unembed = np.zeros((n_out + 1, V + 1), np.int8)
    unembed[:n_out, :V] = w["unembed"]
    unembed[n_out, V] = 1
    return {**w, "embed": embed, "w1": np.hstack([w["w1"], w1_halt]),
            "b1": np.concatenate([w["b1"], np.zeros(len(halting), np.int8)]), "w2": w2, "unembed": unembed}


def compiled_weights(exported: dict[str, np.ndarray], vocab_size: int, d_ffn: int) -> dict[str, np.ndarray]:
    """Inverse of :func:`export_weights`: drop the halt token, its output dimension and the halt units."""
    n_out = exported["unembed"].shape[0] - 1
    return {**exported, "embed": exported["embed"][:vocab_size], "w1": exported["w1"][:, :d_ffn],
            "b1": exported["b1"][:d_ffn], "w2": exported["w2"][:d_ffn, :n_out],
            "unembed": exported["unembed"][:n_out, :vocab_size]}


def _tm_state(tr, s: int) -> dict[str, Any]:
    tm, k = tr.tm, len(tr.tm.symbols)
    if s >= tr.n_mode_states:
        q, a = tr.halt_info[s - tr.n_mode_states]
        return {"id": s, "kind": "halt", "tm_state": tm.states[q], "read": tm.symbols[a], "halting": True}
    qm, r = divmod(s, k)
    q, mode = divmod(qm, 2)
    return {"id": s, "kind": "run", "tm_state": tm.states[q], "mode": ("normal", "delayed")[mode],
            "register": tm.symbols[r], "halting": False}


def vocabulary(model: CompiledTransformer, tm: TuringMachine | None) -> dict[str, Any]:
    """States, symbols and tokens as records: token id = state * n_symbols + symbol, plus the halt token."""
    pm, n_sym = model.pm, model.n_symbols
    if tm is not None:
        tr = tm_to_pm(tm)
        states = [_tm_state(tr, s) for s in range(len(pm.states))]
        symbols = [{"id": c, "cell": tm.symbols[c // 2], "marked": bool(c % 2)} for c in range(n_sym)]
    else:
        tr = None
        states = [{"id": s, "name": pm.states[s], "halting": s in pm.halting} for s in range(len(pm.states))]
        symbols = [{"id": c, "name": pm.symbols[c]} for c in range(n_sym)]
    tokens = []
    for t in range(model.vocab_size):
        s, c = divmod(t, n_sym)
        rec = {"id": t, "state": s, "symbol": c, "halting": s in pm.halting}
        if tr is not None:
            rec["head_read"] = tr.is_step(s, c)
        tokens.append(rec)
    tokens.append({"id": model.vocab_size, "halt": True})
    return {"kind": "turing" if tm is not None else "post", "blank": (tm or pm).symbols[0],
            "n_states": len(states), "n_symbols": n_sym,
            "size": model.vocab_size + 1, "token_id": "state * n_symbols + symbol; the last id is the halt token",
            "states": states, "symbols": symbols, "tokens": tokens}


def _tensor_roles(model: CompiledTransformer, weights: dict[str, np.ndarray]) -> dict[str, Any]:
    roles = {"embed": "E (V+1, d): row t = e_SYM(symbol) + e_ST(state); the halt token's row is 0",
             "w_q": "W_Q (d, 1): 1 on ST, so q = 1 for every token", "w_k": "W_K (d, 1): 0, keys carry no content",
             "rpe": f"rpe (3,): {', '.join(RPE_TYPES)}", "w_v": "W_V (d, |Λ|): copies SYM",
             "w_o": "W_O (|Λ|, d): writes FRONT", "w1": "W_1 (d, units): AND units x[ST_s] + x[FRONT_c], then one "
             "halt unit x[ST_h] per halting state", "b1": "b_1: -1 per AND unit, 0 per halt unit",
             "w2": "W_2 (units, |Λ|+|S|+1): AND unit (s, c) -> y[SYM c'] = y[ST s'] = 1 for tau(s, c) = (s', c'); "
                   "halt units -> y[HALT]",
             "unembed": "U (|Λ|+|S|+1, V+1): column t = (s, c) reads y[SYM c] + y[ST s] (the embedding's SYM "
                        "and ST blocks, transposed); the halt column reads y[HALT]"}
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype), "role": roles[k]} for k, v in weights.items()}


def _decoding(model: CompiledTransformer, tm: TuringMachine | None) -> dict[str, Any]:
    rule = {"greedy": "feed the last W tokens (the prompt first); the next token is the argmax of the last "
                      "position's logits; append it and repeat until it is halt_token, which is not appended",
            "halt_token": model.vocab_size}
    if tm is None:
        rule["configuration"] = ("after any token: the queue is the symbols of the last W tokens, oldest first; "
                                 "the state is the current token's state")
        return rule
    rule["configuration"] = (
        "at a token whose record has head_read (a completed TM step; halting: the halting read): the TM state "
        "is its state's tm_state; the cyclic tape of W+1 cells, read from the head, is: for a 'halt' state, the "
        "state's read symbol followed by the cells of the last W tokens (oldest first); otherwise the cells of "
        "the last W tokens followed by the state's register, rotated to start at the first marked cell (no "
        "mark: at the oldest)")
    rule["tm_steps"] = "head_read tokens, minus one for the halting read"
    return rule


def machine_config(model: CompiledTransformer, machine: TuringMachine | PostMachine, text: str, prompt: list[int],
                   space: dict[str, Any], weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """config.json of an export (everything but the certificate and the files' list)."""
    tm = machine if isinstance(machine, TuringMachine) else None
    sym0, n_sym = model.blocks["SYM"]
    pm = model.pm
    return {
        "format": CONFIG_FORMAT, "machine": machine.name,
        "architecture": {
            "layers": 1, "heads": 1, "d_model": model.d_model, "d_head": 1, "d_value": n_sym,
            "d_ffn": int(weights["w1"].shape[1]), "vocab_size": model.vocab_size + 1, "equations": EQUATIONS,
            "residual_stream": [
                {"block": "SYM", "offset": sym0, "size": n_sym, "holds": "one-hot symbol id of the token"},
                {"block": "ST", "offset": model.blocks["ST"][0], "size": model.blocks["ST"][1],
                 "holds": "one-hot state id of the token"},
                {"block": "FRONT", "offset": model.blocks["FRONT"][0], "size": n_sym,
                 "holds": "one-hot symbol id of the oldest token in the window (written by attention)"}],
            "attention": {"scores": "s_ij = q_i (k_j + rpe[type(i - j)])", "rpe_types": list(RPE_TYPES),
                          "rpe": [int(x) for x in weights["rpe"]], "mask": "sliding window: 0 <= i - j <= W - 1",
                          "hardmax": "one-hot at the first maximum (ties to the oldest)",
                          "softmax": softmax_spec(model.window, n_sym)},
            "ffn": {"activation": "relu", "residual": False,
                    "output": "y = ReLU(h W_1 + b_1) W_2 in the output space (SYM, ST, HALT); logits = y U",
                    "output_space": [{"block": "SYM", "offset": 0, "size": n_sym},
                                     {"block": "ST", "offset": n_sym, "size": len(pm.states)},
                                     {"block": "HALT", "offset": n_sym + len(pm.states), "size": 1}],
                    "and_units": len(model.units), "halt_units": len(pm.halting)},
            "tensors": _tensor_roles(model, weights)},
        "vocabulary": vocabulary(model, tm),
        "input": {"text": text, "length": len(text)},
        "prompt": prompt,
        "decoding": _decoding(model, tm),
        "window": {"W": model.window, "tape_cells": model.window + 1 if tm is not None else None, **space},
        # what attnlab's own loader reads back (load_compiled); the names are display labels only
        "post_machine": {"name": pm.name, "states": list(pm.states), "symbols": list(pm.symbols), "start": pm.start,
                         "delta": [[s, c, s2, c2] for (s, c), (s2, c2) in sorted(pm.delta.items())],
                         "units": [list(u) for u in model.units]},
    }


def onnx_model(weights: dict[str, np.ndarray], window: int) -> bytes:
    """The exported network as a standard ONNX graph: ``input_ids`` (B, T) int64 -> ``logits`` (B, T, V+1)
    float32, the sliding-window RPE computed in the graph from T, attention by ONNX ``Hardmax``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f = {k: v.astype(np.float32) for k, v in weights.items()}
    inits = [numpy_helper.from_array(v, k) for k, v in f.items()]
    consts = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "last": np.array(window - 1, np.int64),
              "W": np.array(window, np.int64), "kind_cur": np.array(0, np.int64), "kind_mid": np.array(1, np.int64),
              "kind_old": np.array(2, np.int64), "neg_inf": np.array(-np.inf, np.float32),
              "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64), "i1": np.array([1], np.int64),
              "i2": np.array([2], np.int64)}
    inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    n = helper.make_node
    nodes = [
        n("Gather", ["embed", "input_ids"], ["x"]),  # (B, T, d)
        n("MatMul", ["x", "w_q"], ["q"]), n("MatMul", ["x", "w_k"], ["k"]), n("MatMul", ["x", "w_v"], ["v"]),
        n("Shape", ["input_ids"], ["shape"]), n("Slice", ["shape", "i1", "i2"], ["T1"]),
        n("Squeeze", ["T1"], ["T"]), n("Range", ["zero", "T", "one"], ["pos"]),
        n("Unsqueeze", ["pos", "ax1"], ["pos_i"]), n("Unsqueeze", ["pos", "ax0"], ["pos_j"]),
        n("Sub", ["pos_i", "pos_j"], ["off"]),  # (T, T): i - j
        n("Equal", ["off", "zero"], ["is_cur"]), n("Equal", ["off", "last"], ["is_old"]),
        n("Where", ["is_cur", "kind_cur", "kind_mid"], ["kind_a"]),
        n("Where", ["is_old", "kind_old", "kind_a"], ["kind"]),
        n("Gather", ["rpe", "kind"], ["bias"]),  # rpe[type(i - j)]
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),  # (B, 1, T)
        n("Add", ["kt", "bias"], ["kb"]), n("Mul", ["q", "kb"], ["scores"]),  # q_i (k_j + rpe)
        n("GreaterOrEqual", ["off", "zero"], ["past"]), n("Less", ["off", "W"], ["near"]),
        n("And", ["past", "near"], ["inside"]),
        n("Where", ["inside", "scores", "neg_inf"], ["masked"]),
        n("Hardmax", ["masked"], ["att"], axis=-1),
        n("MatMul", ["att", "v"], ["head"]), n("MatMul", ["head", "w_o"], ["attn_out"]),
        n("Add", ["x", "attn_out"], ["h"]),
        n("MatMul", ["h", "w1"], ["pre0"]), n("Add", ["pre0", "b1"], ["pre"]), n("Relu", ["pre"], ["act"]),
        n("MatMul", ["act", "w2"], ["y"]), n("MatMul", ["y", "unembed"], ["logits"]),
    ]
    vocab = f["unembed"].shape[1]
    graph = helper.make_graph(
        nodes, "attnlab_machine",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "time"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "time", vocab])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="attnlab.machines")
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Export:
    """A compiled network for one input: the model, its prompt and config.json (without the file list)."""

    model: CompiledTransformer
    prompt: list[int]
    config: dict[str, Any]


def build_export(machine: TuringMachine | PostMachine, text: str, window: int | None = None,
                 max_steps: int = 10**7, model: CompiledTransformer | None = None) -> Export:
    """Size the window from a reference run of at most ``max_steps`` steps (or check the ``window`` given:
    too small is refused, as ``run`` does), compile (or reuse ``model``) and describe the result."""
    cells = machine.encode(text)
    if isinstance(machine, TuringMachine):
        tr = tm_to_pm(machine)
        bound = space_bound(machine, cells, max_steps)
        if window is not None and window + 1 < bound.cells_visited:
            raise AttnlabError(too_small(bound.cells_visited, bound.tm_steps, window, bound.window))
        window = window or bound.window
        pm, space = tr.pm, bound.to_dict()
        state, queue = tr.initial_config(cells, window)
    else:
        pm, window = machine, window or max(len(cells), 1)
        space = {"input_length": len(cells), "rule": "a Post machine runs on a queue of exactly W cells holding "
                 "the input padded with blanks: W >= n; another W is another computation"}
        state, queue = pm.start, pm.initial_queue(cells, window)
    model = compile_pm(pm, window) if model is None else model.with_window(window)
    prompt = model.prompt(state, queue)
    return Export(model, prompt, machine_config(model, machine, text, prompt, space, export_weights(model)))


def write_export(out: Path, model: CompiledTransformer, config: dict[str, Any], fmt: str) -> list[str]:
    """Write the files of format ``fmt`` into the folder ``out``; returns their names."""
    from safetensors.numpy import save_file

    from ..core.atomic import atomic_write_bytes

    weights = export_weights(model)
    files = ["config.json"]
    if fmt in ("safetensors", "hf"):
        with atomic_path(out / "model.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp))
        files.append("model.safetensors")
    if fmt == "onnx":
        atomic_write_bytes(out / "model.onnx", onnx_model(weights, model.window))
        files.append("model.onnx")
    if fmt == "hf":  # the torch module, standalone (torch + safetensors), next to its weights
        shutil.copyfile(Path(__file__).with_name("sdpa.py"), out / "modeling_machine.py")
        files.append("modeling_machine.py")
    atomic_write_json(out / "config.json", {**config, "files": files, "export_format": fmt})
    return files
