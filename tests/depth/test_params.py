import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.depth.model import GPT
from attnlab.depth.params import FAMILIES, KNOWN_MODELS, MOBILELLM, Architecture, count, gpt2_like
from attnlab.depth.sweep import non_embedding_count


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth, width, heads", [(1, 16, 1), (3, 45, 3), (2, 64, 4)])
def test_sweep_model_counts_are_exact(depth, width, heads):
    model = GPT(vocab=37, seq_len=20, depth=depth, width=width, heads=heads)
    c = count(gpt2_like(depth, width, 37, 20, heads))
    assert numel(model) == c["total"]
    assert model.non_embedding_parameters() == c["non_embedding"] == non_embedding_count(depth, width)
    x = torch.randint(0, 37, (2, 20))
    assert model(x).shape == (2, 20, 37)


def _hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=101, n_positions=33, n_embd=48, n_layer=3, n_head=4))
    return model, Architecture("t", "gpt2", 3, 48, 101, 33, 4)


def _hf_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=80, max_position_embeddings=40)
    return BertModel(cfg), Architecture("t", "bert", 2, 32, 97, 40, 4, ffn=80)


def _hf_llama(tied: bool, kv: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=89, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=kv, intermediate_size=72, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg), Architecture("t", "llama", 2, 32, 89, 0, 4, kv, 72, tied)


#: family -> tiny HF models of it (variants: GQA with an untied head, tied head without GQA), each with the
#: Architecture that should count it exactly
HF_MODELS = {"gpt2": [_hf_gpt2], "bert": [_hf_bert],
             "llama": [lambda: _hf_llama(tied=False, kv=2), lambda: _hf_llama(tied=True, kv=4)]}


def test_every_family_is_checked_against_hf():
    assert set(HF_MODELS) == set(FAMILIES)


@pytest.mark.parametrize("family, variant", [(f, i) for f, models in HF_MODELS.items() for i in range(len(models))])
def test_counts_match_hf_models(family, variant):
    model, arch = HF_MODELS[family][variant]()
    assert numel(model) == count(arch)["total"]


@pytest.mark.parametrize("name, total", [("Llama-2 7B", 6_738_415_616), ("Llama-3 8B", 8_030_261_248),
                                         ("BERT-base", 109_482_240), ("GPT-2", 124_439_808),
                                         ("Llama-2 70B", 68_976_648_192)])
def test_published_totals(name, total):
    arch = next(a for a in KNOWN_MODELS if a.name == name)
    assert count(arch)["total"] == total


def test_mobilellm_nominal_sizes_and_errors():
    for arch, nominal in zip(MOBILELLM, (125e6, 350e6, 600e6, 1.0e9, 1.5e9), strict=True):
        assert count(arch)["total"] == pytest.approx(nominal, rel=0.02)
    with pytest.raises(AttnlabError, match="not divisible"):
        GPT(10, 8, 1, 30, 4)
    with pytest.raises(AttnlabError, match="unknown architecture family"):
        count(Architecture("x", "rnn", 1, 8, 8))
