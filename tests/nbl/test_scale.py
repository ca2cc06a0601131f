"""Models larger than one device (issue 13, item 4) on the CPU: a model dispatched by accelerate over the CPU and
disk offload gives the statistics and maps of the model in one place; checkpoints write the layers in turn and
resume exactly; ``nbl plan`` from the config alone."""

import copy
import json

import pytest
import torch

from attnlab.nbl.pipeline import fit
from attnlab.nbl.replace import apply, layer_device
from attnlab.nbl.stats import LAYER_FILE, Stats, collect, fingerprint

CAL = ["--tokens", "256", "--seq-len", "32", "--batch-size", "4"]


def _blocks(n: int, seq: int = 16, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(1))


def _assert_same_stats(a: Stats, b: Stats) -> None:
    assert sorted(a.layers) == sorted(b.layers)
    for i in a.layers:
        assert a.layers[i].n == b.layers[i].n
        for name in ("mean_x", "mean_a", "m2_xx", "m2_xa", "m2_aa"):
            torch.testing.assert_close(getattr(a.layers[i], name).cpu(), getattr(b.layers[i], name).cpu(),
                                       rtol=1e-12, atol=1e-12)


def test_a_model_dispatched_over_cpu_and_disk_gives_the_same_statistics_and_maps(tiny_model, tmp_path):
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    plain = tiny_model("llama", num_hidden_layers=4)
    blocks = _blocks(8)
    reference = collect(plain, blocks, batch_size=4, progress=False)
    sizes = compute_module_sizes(plain)
    budget = sizes["model.embed_tokens"] + 2 * sizes["model.layers.0"] + 1024  # the embeddings and two layers
    device_map = infer_auto_device_map(plain, max_memory={"cpu": budget},
                                       no_split_module_classes=["LlamaDecoderLayer"])
    dispatched = dispatch_model(copy.deepcopy(plain), device_map, offload_dir=tmp_path / "offload")
    assert device_map["model.layers.0"] == "cpu" and device_map["model.layers.3"] == "disk", device_map
    layer3 = dispatched.model.layers[3]
    assert all(p.device.type == "meta" for p in layer3.parameters())  # offloaded: the weights are on disk

    assert fingerprint(dispatched) == fingerprint(plain) == reference.fingerprint
    stats = collect(dispatched, blocks, batch_size=4, progress=False, checkpoint=tmp_path / "stats")
    _assert_same_stats(stats, reference)
    _assert_same_stats(Stats.load(tmp_path / "stats"), reference)

    streamed = collect(dispatched, blocks, batch_size=4, progress=False, stats_device="cpu")
    _assert_same_stats(streamed, reference)
    assert all(t.device.type == "cpu" for st in streamed.layers.values() for t in (st.m2_xx, st.mean_a))

    maps, ref_maps = fit(stats, [1, 3]), fit(reference, [1, 3])
    for m, r in zip(maps, ref_maps):
        assert abs(m.nmse - r.nmse) <= 1e-9 * max(r.nmse, 1e-12)
        assert abs(m.weight - r.weight).max() <= 1e-8 * abs(r.weight).max()
    apply(dispatched, maps)
    apply(plain, ref_maps)
    assert layer_device(dispatched.model.layers[3]).type == "cpu"
    assert dispatched.model.layers[3].self_attn.linear.weight.device.type == "cpu"  # not meta: it runs
    with torch.no_grad():
        torch.testing.assert_close(dispatched(blocks[:2]).logits, plain(blocks[:2]).logits, rtol=1e-5, atol=1e-5)


def test_checkpoints_write_the_layers_in_turn_and_resume_exactly(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama", num_hidden_layers=4)
    blocks = _blocks(20)
    full = collect(model, blocks, batch_size=2, progress=False)
    writes: list[list[int]] = [[]]
    save_layer = Stats.save_layer

    def counting(self, folder, i):
        writes[-1].append(i)
        return save_layer(self, folder, i)

    def next_batch(module, args, kwargs):
        writes.append([])
        if len(writes) == 8:  # the forward pass of batch 7 (0-based 6) is interrupted
            raise KeyboardInterrupt

    monkeypatch.setattr(Stats, "save_layer", counting)
    handle = model.base_model.register_forward_pre_hook(next_batch, with_kwargs=True)
    with pytest.raises(KeyboardInterrupt):
        collect(model, blocks, batch_size=2, checkpoint=tmp_path / "stats", checkpoint_every=3, progress=False)
    handle.remove()
    assert max(len(w) for w in writes) <= 2  # ceil(4 layers / 3): never every layer at once
    partial = Stats.load(tmp_path / "stats")
    counts = {i: s.batches for i, s in partial.layers.items()}
    assert len(set(counts.values())) > 1 and max(counts.values()) <= 6, counts  # layers saved at different batches
    assert partial.meta["batches_done"] == min(counts.values())
    files = sorted(p.name for p in (tmp_path / "stats").iterdir())
    assert files == [LAYER_FILE.format(i) for i in range(4)] + ["stats.json"]
    resumed = collect(model, blocks, batch_size=2, stats=partial, checkpoint=tmp_path / "stats", progress=False)
    _assert_same_stats(resumed, full)

    def stop(module, args, kwargs):
        raise KeyboardInterrupt

    handle = model.base_model.register_forward_pre_hook(stop, with_kwargs=True)
    with pytest.raises(KeyboardInterrupt):  # before any layer file: the folder still resumes, from batch 0
        collect(model, blocks, batch_size=2, checkpoint=tmp_path / "early", progress=False)
    handle.remove()
    early = Stats.load(tmp_path / "early")
    assert early.batches_done == 0 and sorted(early.layers) == [0, 1, 2, 3]
    _assert_same_stats(collect(model, blocks, batch_size=2, stats=early, progress=False), full)
    _assert_same_stats(Stats.load(tmp_path / "stats"), full)
    assert Stats.load(tmp_path / "stats").complete


def test_device_map_auto_on_the_cli_offloads_and_ranks_as_the_plain_model(tiny_checkpoint, tmp_path, monkeypatch,
                                                                           run_cli):
    from attnlab.nbl.session import Session

    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    spread = ["--device-map", "auto", "--max-memory", "cpu=60KB"]  # the embeddings; the layers go to disk
    session = Session.open(str(tiny_checkpoint), "cpu", "float32", "auto", {"cpu": "60KB"}, str(tmp_path / "off"))
    assert "disk" in session.model.hf_device_map.values()
    assert any(p.device.type == "meta" for p in session.model.parameters())
    plain = Session.open(str(tiny_checkpoint))
    assert session.fingerprint == plain.fingerprint

    rc, out, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, "--json")
    assert rc == 0, err
    rows_plain = json.loads(out)
    rc, out, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, *spread, "--offload-folder", tmp_path / "off",
                           "--stats", tmp_path / "spread", "--json", "-o", tmp_path / "rank")
    assert rc == 0, err
    assert Stats.load(tmp_path / "spread").fingerprint == plain.fingerprint  # collected here, on the spread model
    rows = json.loads(out)
    assert [r["layer"] for r in rows] == [r["layer"] for r in rows_plain]
    for r, p in zip(rows, rows_plain):
        assert all(abs(r[k] - p[k]) <= 1e-9 * max(abs(p[k]), 1e-12) for k in p if k != "layer"), (r, p)
    config = json.loads((tmp_path / "rank" / "record.json").read_text())["config"]
    assert config["device_map"] == "auto" and config["max_memory"] == {"cpu": "60KB"}
    assert "stats_device" not in config  # the default: each layer's device

    rc, out, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, "--stats-device", "cpu", "--stats",
                           tmp_path / "streamed", "--json", "-o", tmp_path / "rank-cpu")
    assert rc == 0, err
    assert [r["cca"] for r in json.loads(out)] == pytest.approx([r["cca"] for r in rows_plain], rel=1e-9)
    assert json.loads((tmp_path / "rank-cpu" / "record.json").read_text())["config"]["stats_device"] == "cpu"

    rc, _, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, "--max-memory", "cpu=1GB")
    assert rc == 2 and "need --device-map auto" in err


def test_plan_of_a_tiny_config_matches_the_model(tiny_checkpoint, run_cli):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    d, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    rc, out, err = run_cli("nbl", "plan", tiny_checkpoint / "config.json", "--dtype", "bfloat16", "--json")
    assert rc == 0, err
    plan = json.loads(out)
    params = sum(p.numel() for p in model.parameters())
    assert plan["parameters"] == params and plan["model_bytes"] == 2 * params
    stats = collect(model, _blocks(2, vocab=model.config.vocab_size), batch_size=2, progress=False)
    per_layer = sum(getattr(stats.layers[0], n).numel() * 8 for n in ("mean_x", "mean_a", "m2_xx", "m2_xa", "m2_aa"))
    assert plan["stats_bytes_per_layer"] == per_layer == 8 * (3 * d * d + 2 * d)
    assert plan["stats_bytes"] == n_layers * per_layer and len(plan["per_layer"]) == n_layers
    assert plan["checkpoint_layers_per_write"] == 1  # 4 layers, one file every 8 batches each

    rc, out, err = run_cli("nbl", "plan", tiny_checkpoint, "--max-memory", "cpu=100KB", "--json")
    assert rc == 0, err
    plan = json.loads(out)
    assert {row["device"] for row in plan["per_layer"]} == {"disk"}  # the embeddings alone fit in the budget
    assert all(row["stats_device"] == "cpu" for row in plan["per_layer"])  # disk layers run on the CPU
    assert plan["devices"]["cpu"]["stats_bytes"] == plan["stats_bytes"]
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert plan["devices"]["cpu"]["model_bytes"] == model.model.embed_tokens.weight.numel() * 4
    assert plan["devices"]["cpu"]["model_bytes"] + plan["devices"]["disk"]["model_bytes"] == 4 * params + buffers


def test_plan_of_smollm2_from_its_config(run_cli):
    """SmolLM2-135M: 30 layers of d = 576; the statistics are 239 MB (the issue's measured file size)."""
    rc, out, err = run_cli("nbl", "plan", "smollm2", "--dtype", "bfloat16", "--max-memory", "0=200MiB", "cpu=1GiB",
                           "--json")
    assert rc == 0, err
    plan = json.loads(out)
    assert (plan["layers"], plan["d"], plan["model_type"]) == (30, 576, "llama")
    assert plan["stats_bytes"] == 30 * 8 * (3 * 576 ** 2 + 2 * 576) == 239_155_200
    assert plan["parameters"] == 134_515_008 and plan["model_bytes"] == 2 * 134_515_008  # tied embeddings
    gpu_layers = [row for row in plan["per_layer"] if row["device"] == "0"]
    cpu_layers = [row for row in plan["per_layer"] if row["device"] == "cpu"]
    assert gpu_layers and cpu_layers  # the budget holds some layers; the CPU layers run on GPU 0
    assert plan["devices"]["0"]["stats_bytes"] == 30 * plan["stats_bytes_per_layer"]
    rc, out, err = run_cli("nbl", "plan", "smollm2", "--max-memory", "0=200MiB", "cpu=1GiB", "--stats-device", "cpu",
                           "--json")
    assert rc == 0, err
    plan = json.loads(out)
    assert plan["devices"]["0"]["stats_bytes"] == 0 and plan["devices"]["cpu"]["stats_bytes"] == 239_155_200
    rc, out, err = run_cli("nbl", "plan", "smollm2")
    assert rc == 0 and "228.1 MiB in all" in out, err
