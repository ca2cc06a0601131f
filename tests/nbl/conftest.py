import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_llama_dir):
    """A tiny random Llama (4 layers) with a real tokenizer, saved as an HF checkpoint directory: what the CLI takes
    as MODEL."""
    return tiny_llama_dir("tiny-llama", 10, 300, num_hidden_layers=4, max_position_embeddings=256)
