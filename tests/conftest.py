"""Shared test set-up: one torch thread (the CI box has 2 cores; ``ATTNLAB_TEST_THREADS=2`` runs the suite
with two, to check that no test depends on the thread count)."""

import os

import pytest
import torch

from attnlab.core.runtime import set_threads

set_threads(int(os.environ.get("ATTNLAB_TEST_THREADS", "1")))


@pytest.fixture
def run_cli(capsys):
    """Run the attnlab CLI in-process: returns (exit code, stdout, stderr)."""
    from attnlab.cli import main

    def run(*argv: str):
        rc = main([str(a) for a in argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Build a tiny random Llama with a real (tiny, byte-level BPE) tokenizer trained on the first ``n_docs``
    documents of the built-in corpus, saved as an HF checkpoint folder (what the CLIs take as a model):
    ``tiny_llama_dir(name, n_docs, bpe_vocab, **llama_config)`` returns its path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from attnlab.core.text import load_texts

    def build(name: str, n_docs: int, bpe_vocab: int, **llama_config):
        path = tmp_path_factory.mktemp(name)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(load_texts("builtin")[:n_docs],
                                trainers.BpeTrainer(vocab_size=bpe_vocab, special_tokens=["<eos>"]))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
        fast.save_pretrained(path)
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             num_key_value_heads=2, eos_token_id=fast.eos_token_id, **llama_config)
        LlamaForCausalLM(config).save_pretrained(path)
        return path

    return build


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for every Ray-backend test of the session: grids run with
    ``backend="ray"`` use it instead of starting their own."""
    import logging

    import ray  # a [dev] dependency

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4)


@pytest.fixture
def tiny_model():
    """A tiny randomly initialised model of a supported family (3 layers, d=32), in eval mode."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    def build(model_type: str, seed: int = 0, **overrides):
        kw = dict(TINY)
        if model_type == "gpt2":
            kw = dict(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=128)
        elif model_type == "bert":
            kw.update(intermediate_size=64, max_position_embeddings=128)
        else:
            kw.update(intermediate_size=64, num_key_value_heads=2, max_position_embeddings=128)
            if model_type.startswith("gemma"):
                kw.update(head_dim=8)  # Gemma's default is 256
            if model_type == "phi3":
                kw.update(pad_token_id=0, eos_token_id=1, bos_token_id=1)  # its defaults lie outside a 64-token vocab
        kw.update(overrides)
        config = AutoConfig.for_model(model_type, **kw)
        torch.manual_seed(seed)
        model = (AutoModel if model_type == "bert" else AutoModelForCausalLM).from_config(config)
        return model.eval()

    return build
