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
from collections.abc import Callable, Sequence
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


def scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per fit, for teacher-forced ``logits`` (S, B, L, C) of S fits against ``targets`` (B, L) with IGNORE at
    non-target positions: (exact_accuracy, token_accuracy, smallest margin), each (S,). Exact accuracy is the
    fraction of examples with every target position right (memorized iff 1); the margin is the smallest target
    logit minus best other logit over the target positions (> 0 iff memorized): the rounding error another
    forward path may make without changing any argmax."""
    exact, token = _accuracies(logits, targets)
    mask = targets != IGNORE
    picked, t = logits[:, mask], targets[mask].expand(logits.shape[0], -1)
    target_logit = picked.gather(2, t[..., None]).squeeze(2)
    others = picked.scatter(2, t[..., None], float("-inf")).amax(2)
    return exact, token, (target_logit - others).amin(1)


def _accuracies(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact and token accuracies of :func:`scores`, without the margin."""
    mask = targets != IGNORE
    right = (logits.argmax(-1) == targets) | ~mask
    return right.all(dim=2).float().mean(1), (right & mask).flatten(1).sum(1) / max(int(mask.sum()), 1)


def exact_match(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(exact_accuracy, token_accuracy) of one fit's ``logits`` (B, L, C) (see :func:`scores`)."""
    exact, token, _ = scores(logits[None], targets)
    return exact.item(), token.item()


def min_margin(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The smallest logit margin of one fit's ``logits`` (B, L, C) (see :func:`scores`)."""
    return scores(logits[None], targets)[2].item()


def fit_prompt(backbone: Backbone, data: MemorizeData, m: int, gen_steps: int = 0, config: TuneConfig | None = None,
               seed: int = 0, forward: Callable | None = None) -> FitResult:
    """Adam on an (m, d) prompt with gradient clipping; stop at the first exactly memorizing prompt.

    ``forward(prompt, tokens, gen_steps)`` defaults to the cached :meth:`Backbone.forward` (:func:`fit_prompts`
    with one seed), which then also reuses the inputs' prompt-independent states and, when every target is at the
    last position, computes only what the last position needs (the same logits there, up to rounding).
    """
    if forward is None:
        return fit_prompts(backbone, data, m, [seed], gen_steps, config)[0]
    config = config or TuneConfig()
    prompt = _initial_prompts(backbone, data, m, [seed], gen_steps, config)[0].requires_grad_(True)
    tokens, targets = data.tokens.to(prompt.device), data.targets.to(prompt.device)
    run = train_until_exact([prompt], lambda: forward(prompt, tokens, gen_steps), targets, config)
    return FitResult(m=m, seed=seed, prompt=prompt.detach(), **run)


def fit_prompts(backbone: Backbone, data: MemorizeData, m: int, seeds: Sequence[int], gen_steps: int = 0,
                config: TuneConfig | None = None) -> list[FitResult]:
    """One fit per prompt seed (the fit :func:`fit_prompt` makes), all of them batched through the cached
    :meth:`Backbone.forward` (issue 14, item 1): each prompt has its own loss, gradient clip and stopping step, so
    a fit's outcome does not depend on the others in the batch (up to the rounding of a larger matmul)."""
    config = config or TuneConfig()
    require(len(seeds) >= 1, "fit_prompts needs at least one prompt seed")
    prompts = _initial_prompts(backbone, data, m, seeds, gen_steps, config)
    tokens, all_targets = data.tokens.to(prompts.device), data.targets.to(prompts.device)
    inputs = backbone.input_states(tokens)
    last_only = bool((all_targets[:, :-1] == IGNORE).all())
    targets = all_targets[:, -1:] if last_only else all_targets
    runs = train_prompts_until_exact(prompts, lambda p: backbone(p, inputs, gen_steps, last_only), targets, config)
    return [FitResult(m=m, seed=seed, **run) for seed, run in zip(seeds, runs, strict=True)]


def _initial_prompts(backbone: Backbone, data: MemorizeData, m: int, seeds: Sequence[int], gen_steps: int,
                     config: TuneConfig) -> torch.Tensor:
    """The initial prompts (S, m, d) of ``seeds`` (:func:`draw_prompt`), after checking the fit's settings, put where
    the backbone is, in its dtype."""
    check_prompt_length(m)
    require(gen_steps == 0 or data.target == "last",
            "generation steps read the answer at the last position: use target='last' with gen_steps > 0")
    require(int(data.targets.max()) < backbone.cfg.n_classes,
            f"labels go up to {int(data.targets.max())} but the backbone reads out {backbone.cfg.n_classes} classes")
    weight = backbone.wte.weight
    draws = [draw_prompt(m, backbone.d_model, s, config.prompt_init_std) for s in seeds]
    return torch.stack(draws).to(weight.device, weight.dtype)


def draw_prompt(m: int, d: int, seed: int, std: float = 1.0) -> torch.Tensor:
    """The initial (m, d) prompt of ``seed``: N(0, std^2) from a generator of its own, on the CPU (the same prompt
    on every device, in every batch, and on every side of a comparison)."""
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed)) * std


def train_prompts_until_exact(prompts: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                              targets: torch.Tensor, config: TuneConfig) -> list[dict]:
    """:func:`train_until_exact` for S prompts (S, m, d) at once: ``logits_fn(p)`` gives the logits (S', B, L, C)
    of the S' prompts still training. Per prompt: the mean cross-entropy over its target positions, its own
    gradient-norm clip (``clip_grad_norm_``'s rule), Adam's elementwise update, and its own stop at the first
    exactly memorizing step (it then leaves the batch with its Adam state: the rest go on unchanged) or after
    ``config.max_steps`` steps. Returns one dict per prompt, with the prompt that was checked."""
    mask = targets != IGNORE
    dense = bool(mask.all())  # every position is a target: no boolean indexing (the same loss, fewer ops)
    flat = targets[mask]
    active = list(range(prompts.shape[0]))
    out: list[dict | None] = [None] * len(active)
    p = prompts.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=config.lr)
    t0 = time.perf_counter()
    step = 0
    while True:
        logits = logits_fn(p)
        picked = logits.flatten(1, 2) if dense else logits[:, mask]  # (S', N, C)
        losses = F.cross_entropy(picked.flatten(0, 1), flat.repeat(len(active)), reduction="none")
        losses = losses.view(len(active), -1).mean(1)
        if config.margin:
            exact, token, margin = scores(logits.detach(), targets)
            done = (exact == 1.0) & (margin >= config.margin)
        else:
            exact, token = _accuracies(logits.detach(), targets)
            done = exact == 1.0
        last = step == config.max_steps
        for i in [i for i in range(len(active)) if done[i] or last]:
            out[active[i]] = {"memorized": bool(done[i]), "steps": step, "exact_accuracy": exact[i].item(),
                              "token_accuracy": token[i].item(), "loss": losses[i].item(),
                              "seconds": round(time.perf_counter() - t0, 4), "prompt": p[i].detach().clone()}
        if last or bool(done.all()):
            break
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        if bool(done.any()):  # the finished prompts leave the batch, with their rows of Adam's state
            keep = ~done
            active = [a for a, k in zip(active, keep.tolist(), strict=True) if k]
            state, grad = opt.state[p], p.grad[keep]
            p = p.detach()[keep].clone().requires_grad_(True)
            p.grad = grad
            opt = torch.optim.Adam([p], lr=config.lr)
            opt.state[p] = {"step": state["step"], "exp_avg": state["exp_avg"][keep],
                            "exp_avg_sq": state["exp_avg_sq"][keep]}
        norms = torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
        p.grad.mul_((config.clip / (norms + 1e-6)).clamp(max=1.0)[:, None, None])
        opt.step()
        step += 1
    return out


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
