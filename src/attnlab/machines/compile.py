"""Post machine -> transformer: decoder-only, one layer, one head, hardmax attention whose
only window-dependent part is a three-type relative positional encoding, a ReLU FFN of AND units that
realises the transition function, one-hot embeddings in named residual blocks, all weights in {-1,0,1}.

Tokens are (pushed symbol c, new state s) with id = s * |Λ| + c. Residual stream:

    SYM (|Λ|)  the symbol this token pushed       from the embedding
    ST  (|S|)  the PM state after this token      from the embedding
    FRONT (|Λ|) the queue front's symbol           written by attention (copy SYM of the oldest token)

Attention: q_i = Σ x_i[ST] = 1, k_j = x_j W_K + rpe[type(i-j)] with W_K = 0 and rpe = (current 0,
intermediate 0, oldest 1), so the hardmax picks the oldest token j = i-W+1 (lemma B). FFN: unit
u(s,c) = ReLU(x[ST_s] + x[FRONT_c] - 1) fires iff the state is s and the front is c (lemma C).

Output layer, factored: W2 (units, |Λ| + |S|) writes the symbol and the state of τ(s, c) = (s', c') into an
output space with the blocks SYM, ST of the residual stream, and the unembedding U (|Λ| + |S|, V) reads a
token's logit as y[SYM c] + y[ST s] (U = E[:, SYM ∪ ST]^T, the embedding's own blocks). The winner scores 2,
a token sharing its state or symbol 1, every other 0: the same argmax with margin 1 as a dense one-hot W2
(units, V), with units (|Λ| + |S|) + (|Λ| + |S|) V parameters instead of units V, i.e. linear in the
transition table rather than ~|S|^2 |Λ|^2. Halting states have no units: their tokens are terminal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import AttnlabError
from .machine import PostMachine, TuringMachine

RPE_TYPES = ("current", "intermediate", "oldest")
WEIGHTS = ("embed", "w_q", "w_k", "rpe", "w_v", "w_o", "w1", "b1", "w2", "unembed")


@dataclass(frozen=True)
class CompiledTransformer:
    """The compiled network: integer weight matrices (int8) plus the window W of the RPE."""

    pm: PostMachine
    window: int
    blocks: dict[str, tuple[int, int]]  # name -> (offset, size) in the residual stream
    weights: dict[str, np.ndarray] = field(repr=False)
    units: tuple[tuple[int, int], ...] = field(repr=False)  # (state, front symbol) of each FFN unit

    # --- sizes ---
    @property
    def vocab_size(self) -> int:
        return self.weights["embed"].shape[0]

    @property
    def d_model(self) -> int:
        return self.weights["embed"].shape[1]

    @property
    def d_ffn(self) -> int:
        return self.weights["w1"].shape[1]

    @property
    def params(self) -> int:
        return int(sum(w.size for w in self.weights.values()))

    @property
    def bits_per_param(self) -> int:
        """Bits of a signed integer format that holds every weight ({-1, 0, 1}: 2 bits)."""
        top = max(int(np.abs(w).max()) for w in self.weights.values())
        return int(top).bit_length() + 1

    @property
    def model_bits(self) -> int:
        return self.params * self.bits_per_param

    def sizes(self) -> dict[str, int]:
        return {"window": self.window, "vocab_size": self.vocab_size, "d_model": self.d_model,
                "d_ffn": self.d_ffn, "params": self.params, "bits_per_param": self.bits_per_param,
                "model_bits": self.model_bits}

    # --- token coding ---
    @property
    def n_symbols(self) -> int:
        return len(self.pm.symbols)

    def token(self, symbol: int, state: int) -> int:
        return state * self.n_symbols + symbol

    def rpe_by_offset(self, offsets: np.ndarray) -> np.ndarray:
        """RPE value for query-key offsets i - j (0 <= i - j < W): the only window-dependent weights."""
        kind = np.where(offsets == self.window - 1, 2, np.where(offsets == 0, 0, 1))
        return self.weights["rpe"][kind]

    def with_window(self, window: int) -> CompiledTransformer:
        """The same network with another window: only the RPE's 'oldest' offset moves."""
        if window < 1:
            raise AttnlabError(f"window must be at least 1, got {window}")
        return replace(self, window=window)

    def prompt(self, state: int, queue: list[int]) -> list[int]:
        """The W prompt tokens (queue cell k, start state): the window is full from the first step."""
        if len(queue) != self.window:
            raise AttnlabError(f"queue of length {len(queue)} does not match the window {self.window}")
        return [self.token(c, state) for c in queue]

    # --- export ---
    def save(self, out_dir: str | Path, machine: TuringMachine | PostMachine | None = None, text: str = "",
             fmt: str = "safetensors", max_steps: int = 10**7, extra: dict[str, Any] | None = None) -> Path:
        """Write the self-contained export of this network for ``machine`` (default: its Post machine) on
        ``text`` in format ``fmt`` (:mod:`attnlab.machines.artifact`); a window too small is refused."""
        from .artifact import build_export, write_export

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        export = build_export(machine or self.pm, text, self.window, max_steps, model=self)
        write_export(out, export.model, {**export.config, **(extra or {})}, fmt)
        return out


#: The largest network :func:`compile_pm` builds: int8 weights or the certificate's float64 logits, the larger.
MAX_BYTES = 2 * 2**30


def compiled_size(n_states: int, n_symbols: int, n_halting: int) -> dict[str, int]:
    """Sizes of the network for a Post machine with these counts, before anything is allocated: the
    parameters (int8 bytes), those of the factored output layer (W2 and U) and of the dense one-hot W2 it
    replaces, and the bytes the exhaustive certificate evaluates (V |Λ| windows, float64)."""
    vocab, d, units = n_states * n_symbols, 2 * n_symbols + n_states, (n_states - n_halting) * n_symbols
    n_out = n_symbols + n_states
    output = units * n_out + n_out * vocab
    params = vocab * d + 2 * d + 3 + 2 * d * n_symbols + d * units + units + output
    return {"vocab_size": vocab, "d_model": d, "d_ffn": units, "params": params, "output_params": output,
            "dense_output_params": units * vocab,
            "bytes": max(params, 8 * vocab * n_symbols * (d + units + n_out + 2 * vocab))}


def check_size(name: str, n_states: int, n_symbols: int, n_halting: int) -> None:
    """Refuse (one line, with the estimate) a machine whose network would not fit :data:`MAX_BYTES`."""
    size = compiled_size(n_states, n_symbols, n_halting)
    if size["bytes"] > MAX_BYTES:
        raise AttnlabError(f"{name}: too large to compile: vocabulary {size['vocab_size']:,} tokens, "
                           f"{size['params']:,} parameters, about {size['bytes'] / 2**30:,.1f} GiB to build and "
                           f"certify (limit {MAX_BYTES / 2**30:.0f} GiB); use a machine with fewer states or symbols")


def compile_pm(pm: PostMachine, window: int) -> CompiledTransformer:
    """Compile ``pm`` for queue length ``window`` (the construction in the module docstring)."""
    if window < 1:
        raise AttnlabError(f"window must be at least 1, got {window}")
    check_size(pm.name, len(pm.states), len(pm.symbols), len(pm.halting))
    n_sym, n_st = len(pm.symbols), len(pm.states)
    blocks = {"SYM": (0, n_sym), "ST": (n_sym, n_st), "FRONT": (n_sym + n_st, n_sym)}
    d = 2 * n_sym + n_st
    sym, st, front = (blocks[b][0] for b in ("SYM", "ST", "FRONT"))
    vocab = n_st * n_sym

    embed = np.zeros((vocab, d), np.int8)  # E[(c, s)] = e_SYM(c) + e_ST(s)
    for t in range(vocab):
        s, c = divmod(t, n_sym)
        embed[t, sym + c] = embed[t, st + s] = 1
    w_q = np.zeros((d, 1), np.int8)
    w_q[st:st + n_st] = 1  # every token has exactly one state: q = 1
    w_k = np.zeros((d, 1), np.int8)  # the score is the RPE alone
    rpe = np.array([0, 0, 1], np.int8)  # current, intermediate, oldest
    w_v = np.zeros((d, n_sym), np.int8)
    w_v[sym:sym + n_sym] = np.eye(n_sym, dtype=np.int8)
    w_o = np.zeros((n_sym, d), np.int8)
    w_o[:, front:front + n_sym] = np.eye(n_sym, dtype=np.int8)

    halting = pm.halting
    units = tuple((s, c) for s in range(n_st) if s not in halting for c in range(n_sym))
    w1 = np.zeros((d, len(units)), np.int8)
    b1 = np.full(len(units), -1, np.int8)
    w2 = np.zeros((len(units), n_sym + n_st), np.int8)  # output space: the SYM and ST blocks
    for u, (s, c) in enumerate(units):
        w1[st + s, u] = w1[front + c, u] = 1
        s2, c2 = pm.delta[(s, c)]
        w2[u, sym + c2] = w2[u, st + s2] = 1
    unembed = np.ascontiguousarray(embed[:, :n_sym + n_st].T)  # logit(s, c) = y[SYM c] + y[ST s]
    weights = dict(embed=embed, w_q=w_q, w_k=w_k, rpe=rpe, w_v=w_v, w_o=w_o, w1=w1, b1=b1, w2=w2, unembed=unembed)
    return CompiledTransformer(pm, window, blocks, weights, units)


def compile_machine(machine: TuringMachine | PostMachine, window: int) -> CompiledTransformer:
    """Compile a Turing machine (through its Post machine) or a Post machine for window ``window``."""
    from .post import tm_to_pm

    return compile_pm(machine if isinstance(machine, PostMachine) else tm_to_pm(machine).pm, window)


def load_compiled(path: str | Path) -> CompiledTransformer:
    """Read a folder written by :meth:`CompiledTransformer.save` or ``attnlab machines compile/export``
    (format safetensors or hf): the network without the export's halt token."""
    from safetensors.numpy import load_file

    from .artifact import CONFIG_FORMAT, compiled_weights

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise AttnlabError(f"{path}: not a compiled machine (expected config.json and model.safetensors)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AttnlabError(f"{path / 'config.json'}: not a JSON config ({e})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise AttnlabError(f"{path / 'config.json'}: not an {CONFIG_FORMAT} config (re-export it with "
                           "`attnlab machines export`)")
    p = config["post_machine"]
    pm = PostMachine(p["name"], tuple(p["states"]), tuple(p["symbols"]),
                     {(s, c): (s2, c2) for s, c, s2, c2 in p["delta"]}, p["start"])
    weights = load_file(str(path / "model.safetensors"))
    missing = [k for k in WEIGHTS if k not in weights]
    if missing:
        raise AttnlabError(f"{path / 'model.safetensors'}: missing tensors {', '.join(missing)}")
    units = tuple(tuple(u) for u in p["units"])
    weights = compiled_weights({k: weights[k] for k in WEIGHTS}, len(pm.states) * len(pm.symbols), len(units))
    n_sym, n_st = len(pm.symbols), len(pm.states)
    blocks = {"SYM": (0, n_sym), "ST": (n_sym, n_st), "FRONT": (n_sym + n_st, n_sym)}
    return CompiledTransformer(pm, int(config["window"]["W"]), blocks, weights, units)
