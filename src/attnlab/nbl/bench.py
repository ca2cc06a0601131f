"""Throughput of a linearized model against its original, measured side by side (interleaved repeats,
median), with the analytic FLOP / byte ceiling of the same change beside each measured ratio."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..core.runtime import seed_everything, synchronize
from .lmmse import AffineMap
from .replace import apply, replaced_layers


@dataclass(frozen=True)
class Shape:
    """The numbers the cost model needs, read from an HF config (Llama family or GPT-2)."""

    layers: int
    d: int
    d_kv: int       # width of K (= of V): n_kv_heads * head_dim
    d_ff: int
    ffn_mats: int   # 3 for gated (SwiGLU) MLPs, 2 otherwise
    vocab: int

    @classmethod
    def of(cls, config) -> Shape:
        d = config.hidden_size
        heads = config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        d_ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
        gated = (getattr(config, "hidden_act", "gelu") in ("silu", "swiglu")
                 or config.model_type in ("llama", "mistral", "qwen2"))
        return cls(config.num_hidden_layers, d, d // heads * kv, d_ff, 3 if gated else 2, config.vocab_size)


def flops_per_token(shape: Shape, context: float, replaced: int, lm_head: bool = True) -> float:
    """Forward FLOPs for one token attending to ``context`` earlier tokens (2 per multiply-add); a prefill
    inside ``generate`` computes the LM head for the last token only (``lm_head=False``)."""
    attn = 2 * shape.d * (2 * shape.d + 2 * shape.d_kv) + 4 * context * shape.d
    linear = 2 * shape.d * shape.d
    mlp = 2 * shape.ffn_mats * shape.d * shape.d_ff
    head = 2 * shape.d * shape.vocab if lm_head else 0
    return (shape.layers - replaced) * attn + replaced * linear + shape.layers * mlp + head


def decode_bytes_per_step(shape: Shape, context: int, batch: int, replaced: int, bytes_per_value: int = 4) -> float:
    """Bytes read by one cached decode step: all weights once, plus each kept layer's KV cache per sequence."""
    attn_w = shape.d * (2 * shape.d + 2 * shape.d_kv)
    linear_w = shape.d * shape.d + shape.d
    mlp_w = shape.ffn_mats * shape.d * shape.d_ff
    weights = (shape.layers - replaced) * attn_w + replaced * linear_w + shape.layers * mlp_w + shape.d * shape.vocab
    kv = (shape.layers - replaced) * 2 * context * shape.d_kv * batch
    return (weights + kv) * bytes_per_value


def kv_cache_bytes(shape: Shape, tokens: int, batch: int, replaced: int, bytes_per_value: int = 4) -> int:
    return (shape.layers - replaced) * 2 * tokens * shape.d_kv * batch * bytes_per_value


class _StepClock:
    """A logits processor that only notes the time: ``generate`` calls it once per new token."""

    def __init__(self, device: str = "cpu"):
        self.times: list[float] = []
        self.device = device

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)  # the token's work done, not only queued
        self.times.append(time.perf_counter())
        return scores


@torch.no_grad()
def decode(model, ids: torch.Tensor, steps: int) -> tuple[torch.Tensor, float, float]:
    """Greedy cached ``generate`` of ``steps`` (>= 2) tokens after ``ids``: (the new tokens, prefill seconds,
    decode seconds per token). The prefill (filling the KV cache) runs until the first token's logits; decode
    time is measured between consecutive tokens."""
    from transformers import LogitsProcessorList

    device = str(ids.device)
    clock = _StepClock(device)
    synchronize(device)
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, use_cache=True,
                         pad_token_id=0, logits_processor=LogitsProcessorList([clock]))
    per_token = (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1)
    return out[:, ids.shape[1]:], clock.times[0] - start, per_token


@torch.no_grad()
def bench_pair(model, reference, prompt_lengths: list[int], batch_sizes: list[int], decode_tokens: int = 16,
               repeats: int = 3, seed: int = 0, progress: bool = False) -> dict:
    """Prefill and cached-decode time of ``model`` vs ``reference`` (interleaved, median of ``repeats``).

    Both come from one greedy cached ``generate`` (:func:`decode`): prefill until the first token, then the
    time per further token.
    """
    shape = Shape.of(reference.config)
    k = len(replaced_layers(model))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for batch, length in tqdm([(b, n) for b in batch_sizes for n in prompt_lengths], desc="nbl bench",
                              unit="shape", disable=not progress):
        ids = torch.randint(0, shape.vocab, (batch, length), generator=g).to(reference.device)
        times = {"model": {"prefill": [], "decode": []}, "reference": {"prefill": [], "decode": []}}
        for m in (model, reference):  # warm-up
            m(input_ids=ids, use_cache=False)
        for _ in range(repeats):
            for name, m in (("reference", reference), ("model", model)):
                _, prefill, per_token = decode(m, ids, 1 + decode_tokens)
                times[name]["prefill"].append(prefill)
                times[name]["decode"].append(per_token)
        med = {n: {p: statistics.median(v) for p, v in t.items()} for n, t in times.items()}
        context = length + decode_tokens / 2
        rows.append({
            "batch": batch, "prompt": length,
            "prefill_s": med["reference"]["prefill"], "prefill_s_model": med["model"]["prefill"],
            "prefill_speedup": med["reference"]["prefill"] / med["model"]["prefill"],
            "prefill_ceiling": flops_per_token(shape, (length + 1) / 2, 0, lm_head=False)
            / flops_per_token(shape, (length + 1) / 2, k, lm_head=False),
            "decode_s_per_token": med["reference"]["decode"], "decode_s_per_token_model": med["model"]["decode"],
            "decode_speedup": med["reference"]["decode"] / med["model"]["decode"],
            "decode_byte_ceiling": decode_bytes_per_step(shape, int(context), batch, 0)
            / decode_bytes_per_step(shape, int(context), batch, k),
            "kv_cache_mb": kv_cache_bytes(shape, length, batch, 0) / 2**20,
            "kv_cache_mb_model": kv_cache_bytes(shape, length, batch, k) / 2**20,
            "prefill_spread": [min(times["model"]["prefill"]), max(times["model"]["prefill"])],
        })
    header = (f"{'batch':>5} {'prompt':>6} {'prefill x':>9} {'ceiling':>8} {'decode x':>9} {'byte ceil':>9} "
              f"{'KV MB':>8} {'KV MB new':>9}")
    lines = [f"{k} of {shape.layers} attention layers replaced; speed-ups are original time / new time", header]
    for r in rows:
        lines.append(f"{r['batch']:>5} {r['prompt']:>6} {r['prefill_speedup']:>9.3f} {r['prefill_ceiling']:>8.3f} "
                     f"{r['decode_speedup']:>9.3f} {r['decode_byte_ceiling']:>9.3f} {r['kv_cache_mb']:>8.1f} "
                     f"{r['kv_cache_mb_model']:>9.1f}")
    return {"replaced": k, "layers": shape.layers, "threads": torch.get_num_threads(), "repeats": repeats,
            "rows": rows, "table": "\n".join(lines)}


def random_pair(config, layers: list[int], device: str = "cpu", dtype: torch.dtype = torch.float32,
                seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(model, reference)`` for :func:`bench_pair` without a checkpoint: a random-weight causal LM of ``config``
    built on ``device`` in ``dtype``, and its twin (the same weights) with the attention of ``layers`` replaced
    by random linear maps (their values do not change the speed; the paper's 8B setting needs only its config)."""
    from transformers import AutoModelForCausalLM

    seed_everything(seed)
    with torch.device(device):
        reference = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.load_state_dict(reference.state_dict())
    d = config.hidden_size
    g = torch.Generator().manual_seed(seed + 1)
    apply(model, [AffineMap(i, (torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5).numpy(),
                            np.zeros(d), 0.0, 0.0, 0.0) for i in layers])
    return model, reference
