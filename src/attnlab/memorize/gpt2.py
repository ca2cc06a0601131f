"""The frozen backbone as a standard transformers GPT-2 (``GPT2LMHeadModel``), for a soft prompt of m vectors.

GPT-2 is the layout of :class:`~attnlab.memorize.backbone.Backbone`: learned absolute positions, pre-norm
LayerNorm (eps 1e-5) in each block and before the head, one fused query/key/value projection, scaled dot-product
attention (scale 1/sqrt(head_dim)), an erf-GELU MLP, an untied LM head over the vocabulary. The differences are
absorbed exactly, with no retraining:

- GPT-2's linear maps have biases: they are zero (x + 0 is x), and its ``Conv1D`` weights are the transposes of the
  ``nn.Linear`` weights (a copy, bit for bit);
- the soft prompt has no position in the backbone, and the inputs start at position 0 whatever m is; GPT-2 (and
  PEFT's prompt tuning, which prepends the prompt as input embeddings) adds ``wpe[0..m+L)`` to the whole
  sequence. The table of the converted model is m zero rows, then the backbone's table: the prompt gets + 0 and
  input i gets the backbone's row i, which is why the conversion is for one prompt length m.

What does not convert is refused (one line): a backbone without norms (GPT-2 always has them), the restricted
``readout="classes"`` (GPT-2's head covers the vocabulary: that is the whole-vocabulary criterion), generation
steps (GPT-2 feeds tokens back, not hidden states).
"""

from __future__ import annotations

import torch

from ..core.errors import require
from .backbone import Backbone


def check_convertible(backbone: Backbone, gen_steps: int = 0) -> None:
    """One-line error unless ``backbone`` (with ``gen_steps`` generation steps) has an exact GPT-2 twin."""
    cfg = backbone.cfg
    require(cfg.norm, "the GPT-2 twin has LayerNorms: a backbone without norms (--no-norm) does not convert")
    require(cfg.readout == "vocab", "the GPT-2 twin's head covers the whole vocabulary: use --readout vocab")
    require(gen_steps == 0, "generation steps feed hidden states back, which a transformers model does not: "
                            "use --gen-steps 0 to save a HF model")


def gpt2_config(backbone: Backbone, m: int):
    """The ``GPT2Config`` of the twin for a prompt of ``m`` vectors (``m + max_len`` positions)."""
    from transformers import GPT2Config

    cfg = backbone.cfg
    return GPT2Config(vocab_size=cfg.vocab, n_positions=m + cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                      n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function="gelu", layer_norm_epsilon=1e-5,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, scale_attn_weights=True,
                      tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def gpt2_state(backbone: Backbone, m: int) -> dict[str, torch.Tensor]:
    """The twin's ``state_dict`` (GPT-2 parameter names) from the backbone's weights: copies, transposes and zeros."""
    check_convertible(backbone)
    w = backbone.wpe.weight.detach()
    state = {"transformer.wte.weight": backbone.wte.weight.detach().clone(),
             "transformer.wpe.weight": torch.cat([w.new_zeros(m, w.shape[1]), w]),
             "transformer.ln_f.weight": backbone.ln_f.weight.detach().clone(),
             "transformer.ln_f.bias": backbone.ln_f.bias.detach().clone(),
             "lm_head.weight": backbone.readout.weight.detach().clone()}
    for i, block in enumerate(backbone.blocks):
        p = f"transformer.h.{i}."
        linears = {"attn.c_attn": block.attn.qkv, "attn.c_proj": block.attn.proj, "mlp.c_fc": block.mlp[0],
                   "mlp.c_proj": block.mlp[2]}
        for name, lin in linears.items():
            state[p + name + ".weight"] = lin.weight.detach().T.contiguous()
            state[p + name + ".bias"] = lin.weight.new_zeros(lin.weight.shape[0])
        for name in ("ln_1", "ln_2"):
            norm = getattr(block, name)
            state[p + name + ".weight"] = norm.weight.detach().clone()
            state[p + name + ".bias"] = norm.bias.detach().clone()
    return state


def to_gpt2(backbone: Backbone, m: int):
    """The frozen ``GPT2LMHeadModel`` that computes what ``backbone`` computes after a prompt of ``m`` vectors fed
    as the first m input embeddings (PEFT prompt tuning), in the backbone's dtype, in eval mode."""
    from transformers import GPT2LMHeadModel

    state = gpt2_state(backbone, m)
    weight = backbone.wte.weight
    model = GPT2LMHeadModel(gpt2_config(backbone, m)).to(weight.device, weight.dtype)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval()
