import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.memorize.data import random_tokens
from attnlab.memorize.peft_adapter import PeftMemorizeConfig, fit_peft_prompt, peft_search, random_llama


@pytest.fixture(scope="module")
def llama():
    return random_llama(vocab=16, d_model=32, n_layers=2, n_heads=2, d_ff=64, seed=0)


@pytest.mark.parametrize("method, per_token", [("prompt", 32), ("prefix", 2 * 2 * 32)])
def test_trainable_parameter_counts(llama, method, per_token):
    data = random_tokens(4, 2, vocab=16, n_classes=4, seed=0)
    fit, trainable = fit_peft_prompt(llama, data, 3, PeftMemorizeConfig(method=method, max_steps=2))
    assert trainable == 3 * per_token
    assert fit.steps == 2 and 0.0 <= fit.exact_accuracy <= 1.0
    assert not any(p.requires_grad for p in llama.parameters())  # the backbone stays frozen


def test_peft_prompt_tuning_memorizes_and_search_runs(llama):
    data = random_tokens(4, 2, vocab=16, n_classes=4, seed=0)
    res = peft_search(llama, data, PeftMemorizeConfig(lr=0.1, max_steps=150), m_max=8, restarts=2)
    assert res.m_star is not None and res.exact_accuracy == 1.0
    assert all(p["trainable_params"] == 32 * p["m"] for p in res.probes)
    # the memorizing prompt really memorizes: the check is the harness's exact criterion on the LM's logits
    assert any(p["memorized"] and p["m"] == res.m_star for p in res.probes)


def test_token_ids_must_fit_the_vocabulary(llama):
    data = random_tokens(4, 2, vocab=16, n_classes=4, seed=0)
    with pytest.raises(AttnlabError, match="vocabulary"):
        fit_peft_prompt(llama, data, 2, PeftMemorizeConfig(token_offset=10))
    with pytest.raises(AttnlabError, match="unknown peft method"):
        PeftMemorizeConfig(method="lora")


@pytest.mark.slow
def test_smollm2_prompt_tuning_demo():
    """The packaged real model (converted once, about a minute): a short prompt-tuning fit runs and learns."""
    from attnlab.core.hf import load_causal_lm

    model, _ = load_causal_lm("smollm2")
    model.requires_grad_(False)
    data = random_tokens(4, 4, vocab=64, n_classes=8, seed=0)
    fit, trainable = fit_peft_prompt(model, data, 4, PeftMemorizeConfig(lr=0.1, max_steps=30, token_offset=1000))
    assert trainable == 4 * model.config.hidden_size
    assert fit.loss < 10 and torch.isfinite(torch.tensor(fit.loss))
