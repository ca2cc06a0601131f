import dataclasses
import json

import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.depth.model import GPT
from attnlab.depth.params import (
    DECODERS,
    FAMILIES,
    KNOWN_MODELS,
    MOBILELLM,
    Architecture,
    count,
    flops,
    from_config,
    gpt2_like,
    hf_config,
    known,
    parts,
)
from attnlab.depth.sweep import non_embedding_count


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied parameters once


def meta_count(cfg: dict) -> int:
    """``sum(p.numel())`` of the transformers model of ``cfg`` built on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    cfg = {k: v for k, v in cfg.items() if v is not None}
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = (AutoModel if config.model_type == "bert" else AutoModelForCausalLM).from_config(config)
    return numel(model)


@pytest.mark.parametrize("depth, width, heads", [(1, 16, 1), (3, 45, 3), (2, 64, 4)])
def test_sweep_model_counts_are_exact(depth, width, heads):
    model = GPT(vocab=37, seq_len=20, depth=depth, width=width, heads=heads)
    c = count(gpt2_like(depth, width, 37, 20, heads))
    assert numel(model) == c["total"]
    assert model.non_embedding_parameters() == c["non_embedding"] == non_embedding_count(depth, width)
    x = torch.randint(0, 37, (2, 20))
    assert model(x).shape == (2, 20, 37)


#: One small config.json per family with only the keys that fix the shape, so every default the counter
#: assumes (tied head, key/value heads, head_dim, biases) is the config class's own.
MINIMAL = {
    "gpt2": {"n_layer": 3, "n_embd": 48, "n_head": 4, "vocab_size": 101, "n_positions": 33},
    "bert": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 80,
             "vocab_size": 97, "max_position_embeddings": 40},
    **{f: {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 32, "intermediate_size": 72,
           "vocab_size": 89} for f in DECODERS},
}
#: Variants that switch on what the minimal configs leave off: GQA, untied/tied, biases, head_dim != d/H
#: (32 query heads so that every class default of num_key_value_heads divides them).
VARIANTS = [
    ("gpt2", {"tie_word_embeddings": False, "n_inner": 100}),
    ("llama", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    ("llama", {"attention_bias": True, "mlp_bias": True, "head_dim": 16}),
    ("mistral", {"num_key_value_heads": 1, "head_dim": 20}),
    ("qwen2", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    ("qwen3", {"num_key_value_heads": 2, "attention_bias": True, "head_dim": 8}),
    ("gemma", {"num_key_value_heads": 1, "head_dim": 12, "tie_word_embeddings": False}),
    ("gemma2", {"num_key_value_heads": 2, "head_dim": 24, "attention_bias": True}),
    ("gemma3_text", {"num_key_value_heads": 2, "head_dim": 16}),
]


def test_every_family_is_checked_against_hf():
    assert set(MINIMAL) == set(FAMILIES) and {f for f, _ in VARIANTS} | {"bert"} == set(FAMILIES)


@pytest.mark.parametrize("cfg", [{"model_type": f, **MINIMAL[f]} for f in MINIMAL]
                         + [{"model_type": f, **MINIMAL[f], **v} for f, v in VARIANTS],
                         ids=list(MINIMAL) + [f"{f}-{'-'.join(v)}" for f, v in VARIANTS])
def test_config_counts_equal_the_meta_device_model(cfg):
    assert count(from_config(cfg))["total"] == meta_count(cfg)


@pytest.mark.parametrize("arch", KNOWN_MODELS + MOBILELLM, ids=lambda a: a.name)
def test_published_models_equal_the_meta_device_model(arch):
    if arch.family == "gpt2" and arch.width % arch.heads:  # GPT-3 XL, 13B: Brown et al.'s d_head does not divide
        arch = dataclasses.replace(arch, heads=1)  # d_model; heads do not change a GPT-2 count (HF refuses them)
    assert count(arch)["total"] == meta_count(hf_config(arch))
    if arch.family != "bert":
        assert count(from_config(hf_config(arch)))["total"] == count(arch)["total"]


@pytest.mark.parametrize("name, total", [("Llama-2 7B", 6_738_415_616), ("Llama-3 8B", 8_030_261_248),
                                         ("BERT-base", 109_482_240), ("GPT-2", 124_439_808),
                                         ("Mistral-7B", 7_241_732_096), ("Gemma-7B", 8_537_680_896),
                                         ("Qwen2-0.5B", 494_032_768), ("Llama-2 70B", 68_976_648_192)])
def test_published_totals(name, total):
    assert count(known(name))["total"] == total


def test_parts_add_up_and_embeddings_are_separate():
    a = known("llama-3 8b")
    p, c = parts(a), count(a)
    assert sum(p.values()) == c["total"] and p["lm_head"] == p["token_embedding"] == 128256 * 4096
    assert c["non_embedding"] == c["total"] - 2 * 128256 * 4096
    assert parts(known("GPT-2"))["lm_head"] == 0  # tied


def test_flops_follow_kaplan_table_1():
    a = known("GPT-2")
    n = count(a)["non_embedding"]
    f = flops(a)
    assert f["context"] == 1024 and f["forward"] == 2 * n + 2 * 12 * 1024 * 768
    assert f["training"] == 3 * f["forward"] and f["de_embedding"] == 2 * 768 * 50257
    g = flops(known("Gemma-7B"), context=4096)  # d_attn = 16 heads x 256, not the width 3072
    assert g["forward"] - 2 * count(known("Gemma-7B"))["non_embedding"] == 2 * 28 * 4096 * 16 * 256
    with pytest.raises(AttnlabError, match="context"):
        flops(known("Qwen2-0.5B"))


def test_mobilellm_nominal_sizes_and_errors():
    for arch, nominal in zip(MOBILELLM, (125e6, 350e6, 600e6, 1.0e9, 1.5e9), strict=True):
        assert count(arch)["total"] == pytest.approx(nominal, rel=0.02)
    with pytest.raises(AttnlabError, match="not divisible"):
        GPT(10, 8, 1, 30, 4)
    with pytest.raises(AttnlabError, match="unknown architecture family"):
        count(Architecture("x", "rnn", 1, 8, 8))
    with pytest.raises(AttnlabError, match="not divisible"):
        count(Architecture("x", "llama", 1, 30, 8, heads=4, ffn=8))
    with pytest.raises(AttnlabError, match="multiple of 3 key/value"):
        count(Architecture("x", "llama", 1, 32, 8, heads=4, kv_heads=3, ffn=8))


@pytest.mark.parametrize("cfg, message", [
    ({"model_type": "mixtral"}, "model_type 'mixtral' is not counted"),
    ({"model_type": "gemma3", "text_config": {}}, "count its text_config"),
    ({**MINIMAL["llama"], "model_type": "llama", "hidden_size": True}, "hidden_size must be a positive integer"),
    ({**MINIMAL["llama"], "model_type": "llama", "num_hidden_layers": None}, "no 'num_hidden_layers'"),
    ({**MINIMAL["qwen2"], "model_type": "qwen2", "tie_word_embeddings": "yes"}, "true or false"),
])
def test_bad_configs(cfg, message):
    with pytest.raises(AttnlabError, match=message):
        from_config(json.loads(json.dumps(cfg)))
