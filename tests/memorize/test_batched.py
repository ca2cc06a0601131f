"""Batched prompt fits (issue 14, items 1 and 6): S prompts as one batch give each prompt the fit it gets alone."""

import pytest
import torch

from attnlab.memorize.backbone import Backbone, BackboneConfig
from attnlab.memorize.data import random_tokens
from attnlab.memorize.search import backbone_batch_probe, backbone_probe, p_of_m_search
from attnlab.memorize.tune import TuneConfig, draw_prompt, fit_prompt, fit_prompts, scores

SMALL = dict(vocab=16, n_classes=4, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_len=6, seed=6)


def _backbone(**kw) -> Backbone:
    return Backbone(BackboneConfig(**{**SMALL, **kw})).double()


@pytest.mark.parametrize("gen_steps, last_only", [(0, False), (0, True), (2, True)])
def test_a_batch_of_prompts_gives_each_prompt_its_own_logits_and_gradient(gen_steps, last_only):
    bb = _backbone(max_len=6)
    tokens = random_tokens(5, 4, vocab=16, n_classes=4, seed=1).tokens
    prompts = torch.randn(3, 7, 32, dtype=torch.float64, requires_grad=True)
    batched = bb(prompts, tokens, gen_steps, last_only)
    assert batched.shape[:2] == (3, 5)
    batched[1].sum().backward()  # only prompt 1's logits: the others get no gradient
    assert prompts.grad[0].abs().max() == 0 and prompts.grad[2].abs().max() == 0 and prompts.grad[1].abs().max() > 0
    for s in range(3):
        alone = bb(prompts[s].detach(), tokens, gen_steps, last_only)
        torch.testing.assert_close(batched[s].detach(), alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("target, n_pairs, m, gen_steps, margin", [
    ("last", 4, 8, 0, 0.0), ("last", 4, 8, 0, 0.5), ("every", 1, 8, 0, 0.0), ("last", 3, 8, 1, 0.0)])
def test_batched_fits_are_the_unbatched_fits(target, n_pairs, m, gen_steps, margin):
    """In float64: the same outcome, step count and prompt for every seed, though fits finish at different steps
    and leave the batch. A fit is chaotic: a batch and a single fit round differently on some CPUs (the BLAS
    blocks them differently), and Adam grows that difference by orders of magnitude every ten steps or so (on an
    AMD EPYC, fits of 70+ steps here end up to O(1) apart, and outcomes can flip), so the fits compared here all
    stop within 30 steps (there: at most 2e-8 apart; the step itself is checked at 1e-12 above)."""
    data = random_tokens(n_pairs, 4, vocab=16, n_classes=4, target=target, seed=0)
    bb = _backbone()
    config = TuneConfig(max_steps=30, margin=margin)
    seeds = [3, 11, 0, 7, 5]
    batch = fit_prompts(bb, data, m, seeds, gen_steps, config)
    alone = [fit_prompt(bb, data, m, gen_steps, config, seed=s) for s in seeds]
    assert [(f.seed, f.memorized, f.steps) for f in batch] == [(f.seed, f.memorized, f.steps) for f in alone]
    assert len({f.steps for f in batch}) > 1  # fits did leave the batch at different steps
    for b, a in zip(batch, alone, strict=True):
        torch.testing.assert_close(b.prompt, a.prompt, rtol=0, atol=1e-6)
        assert b.exact_accuracy == a.exact_accuracy and b.token_accuracy == a.token_accuracy


def test_scores_are_per_fit():
    targets = torch.tensor([[-100, 1], [-100, 0]])
    good = torch.nn.functional.one_hot(torch.tensor([[2, 1], [2, 0]]), 3).double() * 2
    bad = good.clone()
    bad[1, 1] = torch.tensor([0.0, 0.0, 3.0])
    exact, token, margin = scores(torch.stack([good, bad]), targets)
    assert exact.tolist() == [1.0, 0.5] and token.tolist() == [1.0, 0.5] and margin.tolist() == [2.0, -3.0]


def test_the_batch_probe_is_the_restart_probe_and_p_of_m_logs_every_fit():
    data = random_tokens(8, 4, vocab=16, n_classes=4, seed=0)
    bb = _backbone()
    tune = TuneConfig(max_steps=60)
    batch, single = backbone_batch_probe(bb, data, tune=tune, seed=4), backbone_probe(bb, data, tune=tune, seed=4)
    together = batch(4, [0, 1, 2, 3, 4])
    assert [r["seed"] for r in together] == [single(4, r)["seed"] for r in range(5)]
    assert [r["steps"] for r in together] == [single(4, r)["steps"] for r in range(5)]
    calls = []
    pms, log = p_of_m_search(lambda m, rs: calls.append((m, rs)) or batch(m, rs), m_max=8, n_seeds=5,
                             budgets=[60, 20], n_boot=50)
    assert all(rs == [0, 1, 2, 3, 4] for _, rs in calls) and len({m for m, _ in calls}) == len(calls)
    assert len(log) == 5 * len(calls) and [p.budget for p in pms] == [60, 20]
    for m, fits in pms[1].outcomes.items():
        assert fits == [r["memorized"] and r["steps"] <= 20 for r in log if r["m"] == m]


def test_peft_from_the_same_initial_prompt_on_the_gpt2_twin_makes_the_harness_fit():
    """The like-for-like comparison of benchmarks/memorize.py: same network, data, criterion, optimizer, initial
    prompt and stopping rule give the same fit through PEFT (float64: only rounding differs)."""
    from attnlab.memorize.gpt2 import to_gpt2
    from attnlab.memorize.peft_adapter import PeftMemorizeConfig, fit_peft_prompt

    data = random_tokens(8, 4, vocab=16, n_classes=4, seed=0)
    bb = Backbone(BackboneConfig(**{**SMALL, "max_len": 4})).double()
    tune = TuneConfig(max_steps=120)
    ours = fit_prompts(bb, data, 8, [3, 11], 0, tune)
    twin = to_gpt2(bb, 8)
    for fit in ours:
        init = draw_prompt(8, 32, fit.seed).double()
        theirs, trainable = fit_peft_prompt(twin, data, 8, PeftMemorizeConfig(max_steps=120), fit.seed, init=init)
        assert (theirs.memorized, theirs.steps, trainable) == (fit.memorized, fit.steps, 8 * 32)
        assert abs(theirs.exact_accuracy - fit.exact_accuracy) < 1e-12
    assert any(f.memorized for f in ours)
