"""The compiled network as a plain torch ``nn.Module`` (the only torch code of attnlab.machines).

Its logits equal :func:`attnlab.machines.network.network_logits` on every full window (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .compile import CompiledTransformer, load_compiled


class MachineTransformer(nn.Module):
    """The compiled network as a plain torch module: ``forward(tokens)`` returns logits (B, T, V).

    Position i attends to the W tokens i-W+1..i (sliding window, hardmax, RPE); positions before the
    window is full have no oldest token and are meaningless (the prompt fills the window).
    """

    def __init__(self, model: CompiledTransformer):
        super().__init__()
        f = {k: torch.tensor(v, dtype=torch.float32) for k, v in model.weights.items()}
        self.window = model.window
        self.embed = nn.Embedding.from_pretrained(f["embed"], freeze=True)
        self.w_q = nn.Linear(model.d_model, 1, bias=False)
        self.w_k = nn.Linear(model.d_model, 1, bias=False)
        self.w_v = nn.Linear(model.d_model, model.n_symbols, bias=False)
        self.w_o = nn.Linear(model.n_symbols, model.d_model, bias=False)
        self.ffn_in = nn.Linear(model.d_model, model.d_ffn)
        self.ffn_out = nn.Linear(model.d_ffn, model.weights["w2"].shape[1], bias=False)  # factored output
        self.unembed = nn.Linear(model.weights["w2"].shape[1], model.vocab_size, bias=False)
        self.register_buffer("rpe", f["rpe"])  # (current, intermediate, oldest)
        with torch.no_grad():
            for lin, name in ((self.w_q, "w_q"), (self.w_k, "w_k"), (self.w_v, "w_v"), (self.w_o, "w_o"),
                              (self.ffn_in, "w1"), (self.ffn_out, "w2"), (self.unembed, "unembed")):
                lin.weight.copy_(f[name].T)
            self.ffn_in.bias.copy_(f["b1"])
        self.requires_grad_(False)

    def rpe_bias(self, t: int) -> torch.Tensor:
        """(T, T) score bias: rpe[type(i - j)] inside the window, -inf outside (and in the future)."""
        off = torch.arange(t)[:, None] - torch.arange(t)[None, :]
        kind = torch.where(off == self.window - 1, 2, torch.where(off == 0, 0, 1))
        bias = self.rpe[kind]
        return bias.masked_fill((off < 0) | (off >= self.window), float("-inf"))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Hardmax attention weights (B, T, T) for residual inputs x (B, T, d): one-hot at the first
        (oldest) maximal score q_i (k_j + rpe(i - j)) inside the window."""
        q, k = self.w_q(x), self.w_k(x)  # (B, T, 1) each
        bias = self.rpe_bias(x.shape[1])
        scores = (q * (k.transpose(1, 2) + bias)).masked_fill(torch.isinf(bias), float("-inf"))
        return torch.nn.functional.one_hot(scores.argmax(-1), x.shape[1]).to(x.dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, T, d)
        x = x + self.w_o(self.attention(x) @ self.w_v(x))
        return self.unembed(self.ffn_out(torch.relu(self.ffn_in(x))))


def load_module(path: str | Path) -> MachineTransformer:
    """Load a compiled machine directory (safetensors + config.json) as an ``nn.Module``."""
    return MachineTransformer(load_compiled(path)).eval()
