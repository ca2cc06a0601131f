"""Fit one soft prompt of length m to a dataset until exact memorization (Wang & Lin 2025, main theorem:
a prompt that makes the frozen model reproduce every target).

Exact memorization: the teacher-forced argmax equals the target at every target position of every
example. The check runs on the logits of each training step's own forward pass, so it costs nothing and
training stops at the first step where it holds (the prompt is then exactly the one that was checked).

At that first step the smallest logit margin is often tiny, so another forward path (another kernel, CPU or
float64) can round it the other way. ``TuneConfig(margin=...)`` asks for more: training goes on until every
target beats every other class by that many logits, which no rounding of another path undoes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.errors import require
from .backbone import Backbone, check_prompt_length
from .data import IGNORE, MemorizeData


@dataclass
class TuneConfig:
    """Optimiser settings. ``max_steps`` is part of the definition of m* (a measured m* is an
    optimiser-and-budget quantity); ``margin`` > 0 demands that logit margin on top of the exact argmax."""

    lr: float = 0.1
    clip: float = 1.0
    max_steps: int = 400
    prompt_init_std: float = 1.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "clip", "prompt_init_std"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, f"{name} must be a finite number > 0, got {value}")
        require(math.isfinite(self.margin) and self.margin >= 0, f"margin must be finite and >= 0, got {self.margin}")
        require(self.max_steps >= 1, f"max_steps must be at least 1, got {self.max_steps}")


@dataclass
class FitResult:
    m: int
    memorized: bool
    steps: int              # optimiser steps taken (at success, the steps before the memorizing prompt)
    exact_accuracy: float   # fraction of examples with every target position right
    token_accuracy: float   # fraction of target positions right
    loss: float
    seconds: float
    seed: int
    prompt: torch.Tensor | None = field(default=None, repr=False)

    def summary(self) -> dict:
        """JSON-ready fields (no tensors)."""
        return {k: v for k, v in self.__dict__.items() if k != "prompt"}


def exact_match(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(exact_accuracy, token_accuracy) of teacher-forced argmax ``logits`` (B, L, C) against ``targets``
    (B, L) with IGNORE at non-target positions. Memorized iff exact_accuracy == 1."""
    mask = targets != IGNORE
    right = (logits.argmax(-1) == targets) | ~mask
    return right.all(dim=1).float().mean().item(), (right & mask).sum().item() / max(int(mask.sum()), 1)


def min_margin(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The smallest (target logit - best other logit) over all target positions: > 0 iff memorized, and the
    rounding error another forward path may make without changing any argmax."""
    mask = targets != IGNORE
    picked, t = logits[mask], targets[mask]
    target_logit = picked.gather(1, t[:, None]).squeeze(1)
    others = picked.scatter(1, t[:, None], float("-inf")).amax(1)
    return (target_logit - others).min().item()


def fit_prompt(backbone: Backbone, data: MemorizeData, m: int, gen_steps: int = 0, config: TuneConfig | None = None,
               seed: int = 0, forward: Callable | None = None) -> FitResult:
    """Adam on an (m, d) prompt with gradient clipping; stop at the first exactly memorizing prompt.

    ``forward(prompt, tokens, gen_steps)`` defaults to the cached :meth:`Backbone.forward`, which then also
    reuses the inputs' prompt-independent states and, when every target is at the last position, computes only
    what the last position needs (the same logits there, bit for bit).
    """
    config = config or TuneConfig()
    check_prompt_length(m)
    require(gen_steps == 0 or data.target == "last",
            "generation steps read the answer at the last position: use target='last' with gen_steps > 0")
    require(int(data.targets.max()) < backbone.cfg.n_classes,
            f"labels go up to {int(data.targets.max())} but the backbone reads out {backbone.cfg.n_classes} classes")
    # drawn on the CPU (the same prompt on every device), then put where the backbone is, in its dtype
    weight = backbone.wte.weight
    g = torch.Generator().manual_seed(seed)
    prompt = (torch.randn(m, backbone.d_model, generator=g) * config.prompt_init_std).to(weight.device, weight.dtype)
    prompt.requires_grad_(True)
    tokens, all_targets = data.tokens.to(weight.device), data.targets.to(weight.device)
    if forward is None:
        inputs = backbone.input_states(tokens)
        last_only = bool((all_targets[:, :-1] == IGNORE).all())
        targets = all_targets[:, -1:] if last_only else all_targets
        run = train_until_exact([prompt], lambda: backbone(prompt, inputs, gen_steps, last_only), targets, config)
    else:
        run = train_until_exact([prompt], lambda: forward(prompt, tokens, gen_steps), all_targets, config)
    return FitResult(m=m, seed=seed, prompt=prompt.detach(), **run)


def train_until_exact(params: list[torch.Tensor], logits_fn: Callable[[], torch.Tensor], targets: torch.Tensor,
                      config: TuneConfig) -> dict:
    """Adam on ``params`` with gradient-norm clipping, minimising cross-entropy of ``logits_fn()`` (B, L, C) on
    the target positions; stops at the first exactly memorizing step or after ``config.max_steps`` steps."""
    opt = torch.optim.Adam(params, lr=config.lr)
    mask = targets != IGNORE
    dense = bool(mask.all())  # every position is a target: no boolean indexing (same loss, fewer ops)
    t0 = time.perf_counter()
    step = 0
    while True:
        logits = logits_fn()
        if dense:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        else:
            loss = F.cross_entropy(logits[mask], targets[mask])
        exact, token = exact_match(logits.detach(), targets)
        done = exact == 1.0 and (config.margin == 0 or min_margin(logits.detach(), targets) >= config.margin)
        if done or step == config.max_steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.clip)
        opt.step()
        step += 1
    return {"memorized": done, "steps": step, "exact_accuracy": exact, "token_accuracy": token,
            "loss": loss.item(), "seconds": round(time.perf_counter() - t0, 4)}
