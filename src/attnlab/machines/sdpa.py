"""An exported machine as a torch module built on ``torch.nn.functional.scaled_dot_product_attention`` with
a standard softmax (no hardmax, no custom kernel). Self-contained: it imports torch and safetensors only and
reads nothing but the export folder (config.json + model.safetensors), so ``attnlab machines export --format
hf`` ships a copy of this file as ``modeling_machine.py``.

    model = load("out/bb4", dtype="bfloat16")      # the folder written by `attnlab machines export`
    logits = model(torch.tensor([prompt]))         # (B, T, V); position i attends to i-W+1 .. i

The inverse temperature β is read from config.json (``architecture.attention.softmax``): the smallest
integer for which the softmax network provably equals the hardmax one in that dtype
(:mod:`attnlab.machines.softmax` has the proof).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

TENSORS = ("embed", "w_q", "w_k", "rpe", "w_v", "w_o", "w1", "b1", "w2", "unembed")


class SoftmaxMachine(nn.Module):
    """One layer, one head: x = E[t]; h = x + SDPA(x W_Q, x W_K, x W_V; scale β, mask β·rpe) W_O;
    logits = (ReLU(h W_1 + b_1) W_2) U (no residual around the FFN; U, the unembedding, gives the logits)."""

    def __init__(self, tensors: dict[str, torch.Tensor], window: int, beta: float, halt_token: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        for name in TENSORS:
            self.register_buffer(name, tensors[name].to(dtype))
        self.window, self.beta = window, float(beta)
        self._masks: dict[tuple[int, str], torch.Tensor] = {}
        # s_ij = q_i (k_j + rpe): SDPA adds the mask outside the product, which is the same because every
        # token the model reads has q = 1 (the halt token ends the run and is never read)
        q = tensors["embed"][:halt_token].double() @ tensors["w_q"].double()
        if not torch.all(q == 1):
            raise ValueError("the query is not 1 for every token: the RPE cannot be an additive attention mask")

    def attn_mask(self, t: int, last_only: bool = False) -> torch.Tensor:
        """(T, T), or (1, T) for the last query: β·rpe[type(i - j)] inside the window (oldest if i - j = W - 1,
        current if i = j, else intermediate), -inf in the future and beyond W. Built once per shape and device."""
        key = (t, last_only, str(self.rpe.device))
        if key not in self._masks:
            i = torch.arange(t - 1 if last_only else 0, t, device=self.rpe.device)
            off = i[:, None] - torch.arange(t, device=self.rpe.device)[None, :]
            kind = torch.where(off == self.window - 1, 2, torch.where(off == 0, 0, 1))
            bias = self.beta * self.rpe[kind]
            self._masks[key] = bias.masked_fill((off < 0) | (off >= self.window), float("-inf"))
        return self._masks[key]

    def forward(self, input_ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V) for every position, or (B, 1, V) for the last one (a decoding step: O(W) work)."""
        x = self.embed[input_ids]  # (B, T, d)
        q, k, v = (x @ w for w in (self.w_q, self.w_k, self.w_v))  # (B, T, 1), (B, T, 1), (B, T, |Λ|)
        mask = self.attn_mask(input_ids.shape[1], last_only)
        if last_only:
            x, q = x[:, -1:], q[:, -1:]
        head = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=mask, scale=self.beta)
        h = x + head[:, 0] @ self.w_o
        return (torch.relu(h @ self.w1 + self.b1) @ self.w2) @ self.unembed


def load(folder: str | Path, dtype: str = "float32", device: str = "cpu") -> SoftmaxMachine:
    """The machine exported to ``folder`` as a :class:`SoftmaxMachine` in ``dtype`` (float32 or bfloat16)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    beta = config["architecture"]["attention"]["softmax"]["inverse_temperature"].get(dtype)
    if beta is None:
        raise ValueError(f"no inverse temperature is provably exact in {dtype} for this machine (see config.json)")
    tensors = load_file(str(folder / "model.safetensors"))
    return SoftmaxMachine(tensors, config["window"]["W"], beta, config["decoding"]["halt_token"],
                          getattr(torch, dtype)).to(device).eval()
