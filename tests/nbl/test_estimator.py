"""The NBL estimator: the same layers and maps as the pipeline functions, fit leaves the model as it was,
transform and save_pretrained give the linearized model."""

import re
import warnings

import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.nbl import NBL, collect, linearize, replaced_layers, score


def _blocks(n=12, seq_len=16, vocab=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (n, seq_len), generator=g)


def _logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("sequential", [False, True])
def test_fit_matches_the_pipeline_and_leaves_the_model_unchanged(sequential, tiny_model):
    model, twin = tiny_model("llama", seed=3), tiny_model("llama", seed=3)
    ids, blocks = _blocks(2, 9, seed=5), _blocks()
    before = _logits(model, ids)
    nbl = NBL(n_layers=2, selector="cca", sequential=sequential, batch_size=4).fit(model, data=blocks)
    assert replaced_layers(model) == {} and torch.equal(_logits(model, ids), before)

    stats = collect(twin, blocks, batch_size=4, progress=False)
    layers, maps = linearize(twin, stats, 2, "cca", sequential=sequential, blocks=blocks, batch_size=4)
    assert nbl.scores_ == score(stats, "cca") and nbl.layers_ == sorted(layers)
    assert [m.layer for m in nbl.maps_] == sorted(layers)
    for ours, theirs in zip(nbl.maps_, sorted(maps, key=lambda m: m.layer)):
        assert (ours.weight == theirs.weight).all() and (ours.bias == theirs.bias).all()

    assert nbl.transform(model) is model and replaced_layers(model) == {i: "nbl" for i in layers}
    assert torch.equal(_logits(model, ids), _logits(twin, ids))


def test_fit_transform_is_fit_then_transform(tiny_model):
    model, twin = tiny_model("llama", seed=2), tiny_model("llama", seed=2)
    ids, blocks = _blocks(2, 9, seed=4), _blocks()
    nbl = NBL(n_layers=2, batch_size=4)
    assert nbl.fit_transform(model, data=blocks) is model
    other = NBL(n_layers=2, batch_size=4).fit(twin, data=blocks)
    assert nbl.layers_ == other.layers_ and torch.equal(_logits(model, ids), _logits(other.transform(twin), ids))


def test_drop_and_keep(tiny_model):
    model = tiny_model("llama", seed=1)
    nbl = NBL(n_layers=2, selector="cosine", method="drop", keep=(0,), batch_size=4).fit(model, data=_blocks())
    assert 0 not in nbl.layers_ and nbl.maps_ == [] and len(nbl.layers_) == 2
    assert replaced_layers(nbl.transform(model)) == {i: "drop" for i in nbl.layers_}


def test_save_pretrained_serves_the_linearized_model(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    nbl = NBL(n_layers=2, tokens=512, seq_len=32, batch_size=4).fit(model, tokenizer, data="builtin")
    assert nbl.calibration_["split"] == "calibration" and nbl.calibration_["tokens"] == 512
    nbl.save_pretrained(tmp_path / "out", model)
    served = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    ids = _blocks(2, 9, vocab=len(tokenizer), seed=5)
    assert torch.equal(_logits(served, ids), _logits(nbl.transform(model), ids))
    with pytest.raises(AttnlabError, match="pass --overwrite"):
        nbl.save_pretrained(tmp_path / "out", model)


@pytest.mark.parametrize("kwargs, data, message", [
    ({"selector": "magic"}, None, "unknown selector 'magic'"),
    ({"method": "magic"}, None, "unknown method 'magic'"),
    ({"ridge": float("nan")}, None, "ridge must be a finite number >= 0"),
    ({"n_layers": 7}, None, "cannot replace 7 layers: the model has 3"),
    ({}, _blocks(3), "48 calibration tokens are too few for a well-posed fit of d = 32 (the map would reproduce its "
                       "calibration text): give at least 128 (--tokens 128)"),
    ({}, "builtin", "text data needs the tokenizer"),
    ({}, 3.5, "data: give a source"),
])
def test_bad_parameters_are_one_line_errors(kwargs, data, message, tiny_model):
    model = tiny_model("llama")
    with pytest.raises(AttnlabError, match=re.escape(message)):
        NBL(**{"n_layers": 1, **kwargs}).fit(model, data=_blocks() if data is None else data)


def test_a_ridge_makes_few_tokens_acceptable(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nbl = NBL(n_layers=1, ridge=0.01, batch_size=4).fit(tiny_model("llama"), data=_blocks(2))
    assert nbl.maps_[0].ridge > 0 and nbl.maps_[0].nmse > 0


def test_unfitted_and_unsaveable(tiny_model, tmp_path):
    model = tiny_model("llama")
    with pytest.raises(AttnlabError, match="not fitted yet"):
        NBL().transform(model)
    nbl = NBL(n_layers=1, batch_size=4).fit(model, data=_blocks())
    with pytest.raises(AttnlabError, match="needs the model's local checkpoint folder"):
        nbl.save_pretrained(tmp_path / "out", model)  # built from a config: no folder to take weights from


@pytest.mark.parametrize("sequential", [False, True])
def test_heldout_nmse_is_the_calibration_nmse_on_the_calibration_text(sequential, tiny_model):
    model = tiny_model("llama", seed=6)
    blocks, other = _blocks(), _blocks(seed=9)
    nbl = NBL(n_layers=2, sequential=sequential, batch_size=4).fit(model, data=blocks)
    again = nbl.heldout_nmse(model, data=blocks)  # the same definition: the maps' own calibration error
    assert again == pytest.approx({m.layer: m.nmse for m in nbl.maps_}, rel=1e-6, abs=1e-12)
    held = nbl.heldout_nmse(model, data=other)
    assert all(held[m.layer] > m.nmse for m in nbl.maps_)  # a least-squares fit is best on its own text
    assert replaced_layers(model) == {}
    with pytest.raises(AttnlabError, match="needs the unmodified model"):
        nbl.heldout_nmse(nbl.transform(model), data=other)
