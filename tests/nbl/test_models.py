"""NBL on tiny random models of every supported family: collect, rank, apply, cache parity, save/load."""

import json
import warnings

import pytest
import torch

from attnlab.core.atomic import current_umask
from attnlab.core.errors import AttnlabError
from attnlab.core.hf import decoder_layers, family_of, layer_list
from attnlab.nbl import (
    SELECTORS,
    Stats,
    apply,
    collect,
    fit,
    linearize,
    load,
    rank_table,
    replaced_layers,
    save,
    score,
)
from attnlab.nbl.bench import decode
from attnlab.nbl.lmmse import affine_error
from attnlab.nbl.pipeline import choose_layers
from attnlab.nbl.stats import LayerStats

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "olmo2", "gpt2", "bert"]


def _blocks(n=12, seq_len=16, vocab=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (n, seq_len), generator=g)


def _zero_layer(model, index):
    """Make layer ``index``'s attention output identically zero, and its MLP too (the block is the identity)."""
    block = decoder_layers(model)[index].block
    names = {"o_proj", "down_proj", "c_proj"} if model.config.model_type != "bert" else {"dense"}
    with torch.no_grad():
        for name, mod in block.named_modules():
            if name.split(".")[-1] in names and isinstance(mod, torch.nn.Linear):
                mod.weight.zero_()
                if mod.bias is not None:
                    mod.bias.zero_()
            if type(mod).__name__ == "Conv1D" and name.split(".")[-1] == "c_proj":
                mod.weight.zero_()
                mod.bias.zero_()


def _output(model, ids):
    out = model(input_ids=ids, use_cache=False)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_attention_layer_ranked_first_and_replacing_it_changes_nothing(family, tiny_model):
    model = tiny_model(family)
    _zero_layer(model, 1)
    blocks = _blocks()
    stats = collect(model, blocks, batch_size=4, progress=False)
    table = rank_table(stats)
    assert [row["layer"] for row in table] == [0, 1, 2]
    for selector in SELECTORS:
        s = score(stats, selector)
        assert min(s, key=s.get) == 1, (selector, s)
    before = _output(model, blocks[:2])
    maps = fit(stats, [1])
    assert abs(maps[0].weight).max() < 1e-9 and abs(maps[0].bias).max() < 1e-9
    apply(model, maps)
    assert replaced_layers(model) == {1: "nbl"}
    torch.testing.assert_close(_output(model, blocks[:2]), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "olmo2"])
@pytest.mark.parametrize("method", ["nbl", "drop", "block"])
def test_cached_generation_matches_a_full_forward_with_layer_0_replaced(family, method, tiny_model):
    """The logits of each cached decoding step equal those of one uncached forward pass over the whole
    sequence (to float32 rounding: the two paths multiply in different shapes), so a replaced layer needs
    no KV cache. Comparing logits, not argmax tokens, keeps a near-tie from deciding the test."""
    model = tiny_model(family, seed=1)
    stats = collect(model, _blocks(), batch_size=6, progress=False)
    if method == "nbl":
        apply(model, fit(stats, [0, 2]))
    else:
        apply(model, method=method, layers=[0, 2])
    prompt = _blocks(2, 5, seed=3)
    out = model.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0,
                         use_cache=True, output_logits=True, return_dict_in_generate=True)
    cached = torch.stack(out.logits, dim=1)
    full = model(input_ids=out.sequences, use_cache=False).logits[:, prompt.shape[1] - 1:-1]
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
    assert torch.equal(decode(model, prompt, 12)[0], out.sequences[:, 5:])  # the benchmark's timed decoding


def test_replaced_layer_keeps_no_kv_cache(tiny_model):
    model = tiny_model("llama")
    apply(model, method="drop", layers=[0, 2])
    out = model(input_ids=_blocks(1, 6), use_cache=True)
    cache = out.past_key_values
    sizes = [layer.keys.numel() if getattr(layer, "keys", None) is not None else 0 for layer in cache.layers]
    assert sizes[1] > 0 and sizes[0] == 0 and sizes[2] == 0


def _saved(tiny_model, family, tmp_path, method="nbl", seed=2):
    """A tiny model of ``family`` saved as a base checkpoint, linearized in 2 layers and saved by ``save``:
    (the linearized model in memory, the folder)."""
    model = tiny_model(family, seed=seed)
    model.save_pretrained(tmp_path / "base")
    stats = collect(model, _blocks(), batch_size=4, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # BERT's C_XX is singular by construction
        layers, maps = linearize(model, stats, k=2, selector="cca", method=method)
    save(tmp_path / "out", tmp_path / "base", maps, {"method": method, "layers": layers, "selector": "cca"})
    return model, tmp_path / "out"


def _data_bytes(path) -> int:
    """The bytes of a safetensors file's tensors: its size less the 8-byte length and the JSON header."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header


def _auto(family):
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModel if family == "bert" else AutoModelForCausalLM


@pytest.mark.parametrize("family, method", [(f, m) for f in FAMILIES for m in ("nbl", "drop", "block")
                                            if (f, m) != ("bert", "block")])  # post-norm: refused (test below)
def test_saved_folder_loads_as_the_linearized_model_with_either_loader(family, method, tiny_model, tmp_path):
    model, out = _saved(tiny_model, family, tmp_path, method)
    ours = load(out)
    theirs = _auto(family).from_pretrained(out, trust_remote_code=True).eval()
    assert replaced_layers(ours) == replaced_layers(model) and len(replaced_layers(model)) == 2
    assert type(theirs).__module__.startswith("transformers_modules")  # the folder's own modeling_nbl.py
    ids = _blocks(2, 9, seed=5)
    reference = _output(model, ids)
    assert torch.equal(_output(ours, ids), reference)
    assert torch.equal(_output(theirs, ids), reference)
    # the replaced layers' attention (and bypassed norm) weights are gone from the checkpoint, the maps are in it
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    with safe_open(str(tmp_path / "base" / "model.safetensors"), framework="pt") as f:
        base_names = set(f.keys())
    fam = family_of(model)
    for i in replaced_layers(model):
        gone = {n for n in base_names if n.startswith(f"{fam.layers}.{i}.{fam.attention}.")}
        if method == "block":  # the whole block's weights
            gone = {n for n in base_names if n.startswith(f"{fam.layers}.{i}.")}
        assert gone and not gone & names
        assert (f"{fam.layers}.{i}.{fam.attention}.linear.weight" in names) == (method == "nbl")
    saved = json.loads((out / "nbl.json").read_text())["bytes"]
    assert saved["saved"] == saved["removed"] - saved["added"] > 0
    assert _data_bytes(tmp_path / "base" / "model.safetensors") - _data_bytes(out / "model.safetensors") == \
        saved["saved"]
    assert (out / "model.safetensors").stat().st_mode & 0o044 == 0o044 & ~current_umask()  # readable as files are


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_plain_from_pretrained_refuses_the_folder_instead_of_serving_the_dense_model(family, tiny_model, tmp_path):
    _, out = _saved(tiny_model, family, tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        _auto(family).from_pretrained(out)


def test_a_sharded_checkpoint_keeps_its_shards_and_index(tiny_model, tmp_path):
    model = tiny_model("llama", seed=3)
    model.save_pretrained(tmp_path / "base", max_shard_size="20KB")
    assert (tmp_path / "base" / "model.safetensors.index.json").exists()
    stats = collect(model, _blocks(), batch_size=4, progress=False)
    layers, maps = linearize(model, stats, k=2, selector="cca")
    save(tmp_path / "out", tmp_path / "base", maps, {"method": "nbl", "layers": layers})
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())["weight_map"]
    assert all((tmp_path / "out" / f).exists() for f in index.values())
    assert not any(".q_proj." in n and f".{i}." in n for n in index for i in layers)
    ids = _blocks(2, 9, seed=5)
    assert torch.equal(_output(load(tmp_path / "out"), ids), _output(model, ids))


def test_a_linearized_folder_is_not_linearized_again(tiny_model, tmp_path):
    _, out = _saved(tiny_model, "llama", tmp_path)
    with pytest.raises(AttnlabError, match="already linearized"):
        save(tmp_path / "again", out, [], {"method": "drop", "layers": [0]})


def test_a_folder_of_the_old_format_is_refused_in_one_line(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "nbl.json").write_text(json.dumps({"schema": "attnlab.nbl/1"}))
    with pytest.raises(AttnlabError, match="older attnlab.*nbl apply"):
        load(tmp_path / "old")


def test_collection_resumes_after_interruption(tiny_model, tmp_path):
    model = tiny_model("llama")
    blocks = _blocks(10)
    full = collect(model, blocks, batch_size=2, progress=False)
    calls = {"n": 0}

    def crash(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt

    handle = model.base_model.register_forward_pre_hook(crash, with_kwargs=True)
    ckpt = tmp_path / "stats"
    with pytest.raises(KeyboardInterrupt):
        collect(model, blocks, batch_size=2, checkpoint=ckpt, checkpoint_every=1, progress=False)
    handle.remove()
    partial = Stats.load(ckpt)
    assert partial.meta["batches_done"] == 3
    resumed = collect(model, blocks, batch_size=2, stats=partial, checkpoint=ckpt, progress=False)
    for i in full.layers:
        for name in ("m2_xx", "m2_xa", "m2_aa", "mean_x", "mean_a"):
            torch.testing.assert_close(getattr(resumed.layers[i], name), getattr(full.layers[i], name), rtol=1e-12,
                                       atol=1e-12)
        assert resumed.layers[i].n == full.layers[i].n == 160


def test_stats_from_another_model_are_refused(tiny_model, tmp_path):
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    from attnlab.nbl import fingerprint

    collect(a, _blocks(4), batch_size=4, progress=False).save(tmp_path / "a")
    with pytest.raises(AttnlabError, match="collected on another model"):
        Stats.load(tmp_path / "a", fingerprint=fingerprint(b))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AttnlabError, match="not an attnlab NBL statistics folder"):
        Stats.load(tmp_path / "junk.safetensors")


def test_kept_layers_are_never_chosen(tiny_model):
    model = tiny_model("llama")
    stats = collect(model, _blocks(4), batch_size=4, progress=False)
    best = choose_layers(stats, 1, "cca")[0]
    assert best not in choose_layers(stats, 2, "cca", keep=(best,))
    assert choose_layers(stats, 2, "cca", keep=(best,)) == choose_layers(stats, 3, "cca")[1:]


def test_bad_requests(tiny_model):
    model = tiny_model("llama")
    stats = collect(model, _blocks(4), batch_size=4, progress=False)
    with pytest.raises(AttnlabError, match="cannot replace 4 layers: the model has 3"):
        linearize(model, stats, k=4)
    with pytest.raises(AttnlabError, match="unknown selector"):
        score(stats, "magic")
    with pytest.raises(AttnlabError, match=r"layer\(s\) \[7\] do not exist"):
        apply(model, method="drop", layers=[7])
    with pytest.raises(AttnlabError, match="fewer than 2 tokens"):
        LayerStats(4).covariances()


def test_sequential_refits_later_layers_through_the_modified_model(tiny_model):
    blocks = _blocks(12)
    one_shot_model, seq_model = tiny_model("llama", seed=4), tiny_model("llama", seed=4)
    stats = collect(one_shot_model, blocks, batch_size=4, progress=False)
    layers, one_shot = linearize(one_shot_model, stats, k=2, selector="nmse")
    _, sequential = linearize(seq_model, stats, k=2, selector="nmse", sequential=True, blocks=blocks, batch_size=4)
    first, second = sorted(layers)

    def by_layer(maps):
        return {m.layer: m for m in maps}

    # the first replaced layer sees the unmodified model: identical fit; the second is refitted
    torch.testing.assert_close(torch.from_numpy(by_layer(sequential)[first].weight),
                               torch.from_numpy(by_layer(one_shot)[first].weight))
    assert not torch.allclose(torch.from_numpy(by_layer(sequential)[second].weight),
                              torch.from_numpy(by_layer(one_shot)[second].weight))
    # on what the second layer receives once the first is replaced, the refitted map is the LMMSE optimum,
    # so its error there is at most the one-shot map's
    probe = tiny_model("llama", seed=4)
    apply(probe, [by_layer(sequential)[first]])
    st = collect(probe, blocks, batch_size=4, layers=[second], progress=False).layers[second]
    moments = (st.mean_x.numpy(), st.mean_a.numpy(), *st.covariances())
    seq_err = affine_error(by_layer(sequential)[second], *moments)
    one_err = affine_error(by_layer(one_shot)[second], *moments)
    assert seq_err <= one_err * (1 + 1e-9)
    # the refit saw this stream replayed rather than recomputed: equal up to float32 forward-pass rounding
    assert seq_err == pytest.approx(by_layer(sequential)[second].mse, rel=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_replaying_the_stream_entering_a_layer_equals_running_the_layers_before_it(family, tiny_model):
    model = tiny_model(family, seed=6)
    blocks = _blocks(8)
    first = collect(model, blocks, batch_size=4, layers=[1], capture=True, progress=False)
    assert first.entry.layer == 1 and len(first.entry.hidden) == 2
    direct = collect(model, blocks, batch_size=4, layers=[2], progress=False)
    replayed = collect(model, blocks, batch_size=4, layers=[2], enter=first.entry, progress=False)
    for name in ("m2_xx", "m2_xa", "m2_aa", "mean_x"):
        torch.testing.assert_close(getattr(replayed.layers[2], name), getattr(direct.layers[2], name), rtol=1e-5,
                                   atol=1e-6)
    assert type(decoder_layers(model)[0].block).__name__ != "_Passthrough"  # the model is restored


#: Where each family's stream after the attention residual add, X + A, enters the rest of the layer: written
#: from the modeling code, independently of attnlab/core/hf.py's taps, which this checks.
AFTER_ATTENTION = {"llama": "post_attention_layernorm", "mistral": "post_attention_layernorm",
                   "qwen2": "post_attention_layernorm", "qwen3": "post_attention_layernorm",
                   "phi3": "post_attention_layernorm", "gemma2": "pre_feedforward_layernorm",
                   "gemma3_text": "pre_feedforward_layernorm", "olmo2": "mlp", "gpt2": "ln_2",
                   "bert": "attention.output.LayerNorm"}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_taps_are_the_residual_stream_and_the_attention_branch(family, tiny_model):
    """X (input of x_tap) + A (output of a_tap) is what the layer carries past its attention sub-layer."""
    model = tiny_model(family, seed=4)
    layer = decoder_layers(model)[1]
    seen = {}

    def keep(name, value):
        seen.setdefault(name, (value[0] if isinstance(value, tuple) else value).clone())

    hooks = [layer.x_tap.register_forward_pre_hook(lambda m, a, k: keep("x", a or k["hidden_states"]),
                                                   with_kwargs=True),
             layer.a_tap.register_forward_hook(lambda m, i, o: keep("a", o)),
             layer.block.get_submodule(AFTER_ATTENTION[family]).register_forward_pre_hook(
                 lambda m, a: keep("y", a))]
    with torch.no_grad():
        _output(model, _blocks(2, 8))
    for h in hooks:
        h.remove()
    assert seen["x"].abs().sum() > 0 and seen["a"].abs().sum() > 0
    torch.testing.assert_close(seen["x"] + seen["a"], seen["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "bert"])
def test_block_drop_passes_the_input_on(family, tiny_model):
    """A dropped block's output is its input, exactly: the model equals the model without that layer."""
    model, twin = tiny_model(family, seed=7), tiny_model(family, seed=7)
    apply(model, method="block", layers=[1])
    assert replaced_layers(model) == {1: "block"}
    seen = {}

    def keep(name, value):
        seen.setdefault(name, value[0] if isinstance(value, tuple) else value)

    block = decoder_layers(model)[1].block
    hooks = [block.register_forward_pre_hook(lambda m, a, k: keep("in", a or k["hidden_states"]), with_kwargs=True),
             block.register_forward_hook(lambda m, i, o: keep("out", o))]
    ids = _blocks(2, 8)
    logits = _output(model, ids)
    for h in hooks:
        h.remove()
    assert torch.equal(seen["in"], seen["out"])
    layers = layer_list(twin)
    del layers[1]  # the same model with layer 1 removed (the config still counts it: only the forward is compared)
    torch.testing.assert_close(logits, _output(twin, ids), rtol=0, atol=0)


def test_block_drop_is_refused_for_a_post_norm_encoder(tiny_model):
    with pytest.raises(AttnlabError, match="method block: bert is post-norm"):
        apply(tiny_model("bert"), method="block", layers=[1])


def test_angular_distances_equal_a_direct_computation_and_pick_the_best_run(tiny_model):
    """Gromov et al.: the statistics' angular distance from layer j's input to layer i's output equals the mean
    arccos(cos) / pi over tokens of the hidden states transformers returns; k layers are the best run."""
    import math

    from attnlab.nbl.pipeline import best_run

    model = tiny_model("llama", seed=8, num_hidden_layers=4)
    blocks = _blocks()
    stats = collect(model, blocks, batch_size=4, progress=False)
    with torch.no_grad():
        hidden = model(input_ids=blocks, output_hidden_states=True).hidden_states  # embeddings, then each layer
    last = model.model.norm  # transformers applies the final norm to the last hidden state: undo it by a hook
    outs = {}
    h = last.register_forward_pre_hook(lambda m, a: outs.update(pre=a[0].clone()))
    with torch.no_grad():
        model(input_ids=blocks)
    h.remove()
    states = [*hidden[:-1], outs["pre"]]  # the input of layer j is states[j]; the output of layer i is states[i+1]
    for i in range(4):
        for j in range(i + 1):
            cos = torch.nn.functional.cosine_similarity(states[j].reshape(-1, 32), states[i + 1].reshape(-1, 32), -1)
            direct = float((torch.arccos(cos.clamp(-1, 1)) / math.pi).double().mean())
            assert float(stats.layers[i].mean_angular[j]) == pytest.approx(direct, rel=1e-5)
        # ShortGPT's block influence reads the same product: the cosine of layer i's input with its output
        direct = float(torch.nn.functional.cosine_similarity(states[i].reshape(-1, 32), states[i + 1].reshape(-1, 32),
                                                             -1).double().mean())
        assert stats.layers[i].mean_cos_block == pytest.approx(direct, rel=1e-5)
    for k in (1, 2, 3):
        runs = {s: float(stats.layers[s + k - 1].mean_angular[s]) for s in range(4 - k + 1)}
        assert best_run(stats, k) == list(range(min(runs, key=runs.get), min(runs, key=runs.get) + k))
        assert choose_layers(stats, k, "angular") == best_run(stats, k)
    assert 0 not in best_run(stats, 2, keep=(0,))
    with pytest.raises(AttnlabError, match="no run of 3 consecutive layers avoids"):
        best_run(stats, 3, keep=(1, 2))
