"""The same m* search on any Hugging Face causal LM through ``peft`` (prompt tuning, Lester et al. 2021;
prefix tuning, Li & Liang 2021). PEFT can tune a prompt but cannot say how long one must be; this adapter
turns a PEFT fit into a probe for :func:`attnlab.memorize.search.search_min_length`.

Labels are token ids (class c is token ``c + token_offset``) and the check is the same exact criterion as
the cached harness: the teacher-forced argmax over the whole vocabulary equals the target at every target
position. Unlike :class:`~attnlab.memorize.backbone.Backbone`, PEFT recomputes the prompt for every
example in the batch; ``benchmarks/memorize.py`` measures what that costs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import require
from .backbone import check_prompt_length
from .data import IGNORE, MemorizeData
from .search import SearchResult, prompt_seed, search_min_length
from .settings import METHODS
from .tune import FitResult, TuneConfig, train_until_exact


@dataclass
class PeftMemorizeConfig(TuneConfig):
    """The harness's optimiser settings plus what PEFT tunes: ``method``, a name in
    :data:`~attnlab.memorize.settings.METHODS` (prompt or prefix tuning). The prompt initialisation is PEFT's
    own (N(0, 1) for prompt tuning)."""

    method: str = "prompt"
    token_offset: int = 0   # data token t is fed as id t + token_offset (skip a real vocabulary's special tokens)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.method in METHODS, f"unknown peft method {self.method!r} (use one of {', '.join(METHODS)})")

    def peft_config(self, m: int):
        import peft

        return getattr(peft, METHODS[self.method])(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=m)


def fit_peft_prompt(model, data: MemorizeData, m: int, config: PeftMemorizeConfig | None = None,
                    seed: int = 0, init: torch.Tensor | None = None) -> tuple[FitResult, int]:
    """Fit a PEFT prompt of length m on the frozen ``model`` until exact memorization; returns the fit and
    the trainable-parameter count (m*d for prompt tuning, 2*layers*m*d_kv for prefix tuning). ``init`` (m, d), for
    prompt tuning: start from these prompt vectors (and in their dtype) instead of PEFT's own draw (a like-for-like
    comparison)."""
    from peft import get_peft_model

    config = config or PeftMemorizeConfig()
    check_prompt_length(m)
    vocab = model.get_input_embeddings().weight.shape[0]
    top = max(int(data.tokens.max()), int(data.targets.max())) + config.token_offset
    require(top < vocab, f"data token ids reach {top} but the model's vocabulary has {vocab} (lower --token-offset "
                         f"or --vocab)")
    require(init is None or (config.method == "prompt" and tuple(init.shape) == (m, model.config.hidden_size)),
            "an initial prompt is for prompt tuning and has shape (m, hidden size)")
    torch.manual_seed(seed)  # peft initialises the prompt from torch's global generator
    with warnings.catch_warnings():  # peft/transformers deprecation notices, once per probe otherwise
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, config.peft_config(m))
        if init is not None:  # peft keeps its prompt in float32: here it takes init's dtype (a float64 run's)
            embedding = peft_model.prompt_encoder["default"].embedding.to(init.dtype)
            with torch.no_grad():
                embedding.weight.copy_(init)
        return _fit(peft_model, data, m, config, seed)


def _fit(peft_model, data: MemorizeData, m: int, config: PeftMemorizeConfig, seed: int) -> tuple[FitResult, int]:
    params = [p for p in peft_model.parameters() if p.requires_grad]
    device = peft_model.get_input_embeddings().weight.device  # the data goes where the model is
    input_ids = data.tokens.to(device) + config.token_offset
    tokens = data.targets.to(device)
    targets = torch.where(tokens == IGNORE, tokens, tokens + config.token_offset)
    L = data.seq_len
    # prompt tuning also returns logits at the m virtual positions: keep the last seq_len
    run = train_until_exact(params, lambda: peft_model(input_ids=input_ids).logits[:, -L:], targets, config)
    return FitResult(m=m, seed=seed, **run), sum(p.numel() for p in params)


def peft_search(model, data: MemorizeData, config: PeftMemorizeConfig | None = None, m_max: int = 256,
                restarts: int = 2, seed: int = 0, progress: bool = False, m_start: int = 1) -> SearchResult:
    """m* through PEFT: the search of :mod:`attnlab.memorize.search` with :func:`fit_peft_prompt` probes."""
    from tqdm import tqdm

    config = config or PeftMemorizeConfig()
    bar = tqdm(desc=f"peft {config.method} search", unit="probe", disable=not progress)

    def probe(m: int, restart: int) -> dict[str, Any]:
        bar.set_postfix(m=m, restart=restart)
        fit, trainable = fit_peft_prompt(model, data, m, config, prompt_seed(seed, m, restart))
        bar.update()
        return {**fit.summary(), "trainable_params": trainable}

    res = search_min_length(probe, m_max, restarts, m_start)
    bar.close()
    return res


def random_llama(vocab: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, gain: float = 3.0,
                 max_len: int = 256, seed: int = 0):
    """A random LlamaForCausalLM of the given size with the harness's init (weights ~ N(0, gain^2/fan_in),
    embeddings N(0, 1)): the "equivalent model" for comparing PEFT with the cached backbone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=n_layers,
                      num_attention_heads=n_heads, num_key_value_heads=n_heads, max_position_embeddings=max_len,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed_tokens" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if "lm_head" in name else gain) / p.shape[1] ** 0.5)
            elif p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g))
    model.requires_grad_(False)
    return model.eval()


def load_model(spec: str, settings: dict[str, Any], seed: int = 0):
    """"random-llama" (sized by ``settings``), a packaged name such as "smollm2", or a local HF directory."""
    if spec == "random-llama":
        s = settings
        return random_llama(max(s["vocab"], s["n_classes"]), s["d_model"], s["n_layers"], s["n_heads"], s["d_ff"],
                            s["gain"], max_len=s["seq_len"] + 256, seed=seed)
    from ..core.hf import load_causal_lm

    model, _ = load_causal_lm(spec)
    model.requires_grad_(False)
    return model
