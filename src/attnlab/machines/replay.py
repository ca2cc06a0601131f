"""The generic greedy driver: runs an exported machine in a standard runtime (onnxruntime or torch SDPA)
reading nothing but the export folder, and decodes the result with config.json's records alone.

It knows no attnlab machine objects: the prompt, the window, the halt token and the meaning of every token
come from config.json, the network from ``model.onnx`` or ``model.safetensors`` (:mod:`.sdpa`). A trace
written by ``attnlab machines run --trace`` is the reference it is compared with, token for token.

Trace format (JSON Lines): a header object (format, machine, input, window, vocab_size, prompt), then one
generated token id per line, then a footer object (halted, tokens, tm_steps).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import AttnlabError
from .registry import RUNTIMES

TRACE_FORMAT = "attnlab.machines.trace/1"


def read_config(folder: str | Path) -> dict[str, Any]:
    from .artifact import CONFIG_FORMAT

    path = Path(folder) / "config.json"
    if not path.is_file():
        raise AttnlabError(f"{folder}: not an exported machine (no config.json; write one with `attnlab machines "
                           "export`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AttnlabError(f"{path}: not a JSON config ({e})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise AttnlabError(f"{path}: not an {CONFIG_FORMAT} config (re-export with `attnlab machines export`)")
    return config


def onnx_step(folder: Path) -> Callable[[np.ndarray], int]:
    """next token = argmax of the last position's logits, by onnxruntime on ``model.onnx``."""
    import onnxruntime as ort

    if not (folder / "model.onnx").is_file():
        raise AttnlabError(f"{folder}: no model.onnx (export with --format onnx, or replay with --runtime torch)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # tiny graphs: threads only add latency
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return lambda ids: int(session.run(["logits"], {"input_ids": ids})[0][0, -1].argmax())


def torch_step(folder: Path, dtype: str, device: str) -> Callable[[np.ndarray], int]:
    """next token by the SDPA softmax module (:func:`attnlab.machines.sdpa.load`) in ``dtype``."""
    import torch

    from .sdpa import load

    if not (folder / "model.safetensors").is_file():
        raise AttnlabError(f"{folder}: no model.safetensors (export with --format hf or safetensors, or replay "
                           "with --runtime onnx)")
    try:
        model = load(folder, dtype, device)
    except ValueError as e:
        raise AttnlabError(f"{folder}: {e}") from None

    def step(ids: np.ndarray) -> int:
        with torch.inference_mode():
            return int(model(torch.from_numpy(ids).to(device), last_only=True)[0, -1].argmax())

    return step


@dataclass
class Replay:
    tokens: list[int]
    halted: bool
    seconds: float
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        voc = self.config["vocabulary"]
        out = {"machine": self.config["machine"], "input": self.config["input"]["text"],
               "window": self.config["window"]["W"], "tokens": len(self.tokens), "halted": self.halted,
               "tokens_per_s": round(len(self.tokens) / self.seconds, 1) if self.seconds > 0 else None}
        if voc["kind"] == "turing":
            heads = sum(voc["tokens"][t]["head_read"] for t in self.tokens)
            out["tm_steps"] = heads - int(self.halted)
        window = (list(self.config["prompt"]) + self.tokens)[-self.config["window"]["W"]:]
        out.update(decode(self.config, window))
        return out


def replay(folder: str | Path, runtime: str = "onnx", dtype: str = "float32", device: str = "cpu",
           max_tokens: int = 10**7) -> Replay:
    """Greedy decoding from config.json's prompt until the halt token or ``max_tokens`` tokens."""
    folder = Path(folder)
    config = read_config(folder)
    if runtime not in RUNTIMES:
        raise AttnlabError(f"unknown runtime {runtime!r} (use {', '.join(RUNTIMES)})")
    if runtime == "onnx" and dtype != "float32":
        raise AttnlabError("the ONNX export is float32 (hardmax); --dtype bfloat16 needs --runtime torch")
    step = onnx_step(folder) if runtime == "onnx" else torch_step(folder, dtype, device)
    W, halt = config["window"]["W"], config["decoding"]["halt_token"]
    window = deque(config["prompt"], maxlen=W)
    if len(window) != W:
        raise AttnlabError(f"{folder}/config.json: the prompt has {len(config['prompt'])} tokens, the window is {W}")
    tokens: list[int] = []
    halted = config["vocabulary"]["tokens"][window[-1]].get("halting", False)
    t0 = time.perf_counter()
    while not halted and len(tokens) < max_tokens:
        nxt = step(np.fromiter(window, np.int64, W)[None])
        if nxt == halt:
            halted = True
            break
        tokens.append(nxt)
        window.append(nxt)
    return Replay(tokens, halted, time.perf_counter() - t0, config)


def decode(config: dict[str, Any], window: Sequence[int]) -> dict[str, Any]:
    """The configuration after the last token of ``window`` (the last W tokens), from the records only."""
    voc = config["vocabulary"]
    tokens, states, symbols = voc["tokens"], voc["states"], voc["symbols"]
    cur = tokens[window[-1]]
    state = states[cur["state"]]
    if voc["kind"] == "post":
        return {"final_state": state["name"], "queue": "".join(symbols[tokens[t]["symbol"]]["name"] for t in window)}
    if not cur["head_read"]:  # mid-rotation: the tape is not at a TM step
        return {"final_state": None, "tape_from_head": None}
    cells = [symbols[tokens[t]["symbol"]] for t in window]
    if state["kind"] == "halt":
        tape = [state["read"]] + [c["cell"] for c in cells]
    else:
        head = next((i for i, c in enumerate(cells) if c["marked"]), 0)
        tape = [c["cell"] for c in cells] + [state["register"]]
        tape = tape[head:] + tape[:head]
    return {"final_state": state["tm_state"], "tape_from_head": "".join(tape),
            "nonblank": sum(c != voc["blank"] for c in tape)}


# --- traces --------------------------------------------------------------------------------------------

def trace_lines(header: dict[str, Any], tokens: Sequence[int], footer: dict[str, Any]) -> str:
    return "".join([json.dumps({"format": TRACE_FORMAT, **header}) + "\n", *(f"{t}\n" for t in tokens),
                    json.dumps(footer) + "\n"])


def read_trace(path: str | Path) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
    """(header, token ids, footer) of a trace file; malformed files are one-line errors naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AttnlabError(f"trace not found: {path} (write one with `attnlab machines run --trace FILE`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AttnlabError(f"cannot read the trace {path}: {e}") from None
    try:
        values = [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        raise AttnlabError(f"{path}: not JSON Lines ({e.msg})") from None
    if len(values) < 2 or not isinstance(values[0], dict) or values[0].get("format") != TRACE_FORMAT \
            or not isinstance(values[-1], dict):
        raise AttnlabError(f"{path}: not an {TRACE_FORMAT} trace (header, token ids, footer)")
    tokens = values[1:-1]
    bad = next((i for i, t in enumerate(tokens) if not isinstance(t, int) or isinstance(t, bool)), None)
    if bad is not None:
        raise AttnlabError(f"{path}:{bad + 2}: expected a token id, got {lines[bad + 1]!r}")
    return values[0], tokens, values[-1]


def compare(result: Replay, header: dict[str, Any], tokens: list[int], footer: dict[str, Any]) -> str | None:
    """None if the replay is the trace token for token (and halts where it halts), else what differs."""
    if list(header.get("prompt", [])) != list(result.config["prompt"]):
        return "the trace starts from another prompt than config.json (another input or window)"
    for i, (a, b) in enumerate(zip(result.tokens, tokens)):
        if a != b:
            return f"token {i + 1} differs: the runtime generated {a}, the trace has {b}"
    if len(result.tokens) != len(tokens) or result.halted != bool(footer.get("halted")):
        return (f"the runtime generated {len(result.tokens)} tokens (halted {result.halted}), the trace has "
                f"{len(tokens)} (halted {bool(footer.get('halted'))})")
    return None
