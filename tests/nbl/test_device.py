"""--device / --dtype on every nbl command: a device this machine lacks is refused first, bfloat16 runs end to end
with float64 statistics, and both are recorded."""

import json

import pytest
import torch

CAL = ["--tokens", "256", "--seq-len", "32", "--batch-size", "4"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["collect", "{ckpt}", *CAL, "-o", "{tmp}/out/stats"],
    ["rank", "{ckpt}", *CAL, "-o", "{tmp}/out"],
    ["apply", "{ckpt}", "--layers", "1", *CAL, "-o", "{tmp}/out"],
    ["compare", "{ckpt}", "--layers", "1", "--configs", "nbl/cca", *CAL, "-o", "{tmp}/out"],
    ["eval", "{ckpt}", "--against", "{ckpt}", "-o", "{tmp}/out"],
    ["bench", "{ckpt}", "--against", "{ckpt}", "-o", "{tmp}/out"],
])
def test_cuda_without_cuda_is_one_line_and_writes_nothing(argv, tiny_checkpoint, cache, run_cli):
    argv = [a.format(ckpt=tiny_checkpoint, tmp=cache) for a in argv]
    rc, out, err = run_cli("nbl", *argv, "--device", "cuda")
    assert rc == 2 and out == ""
    assert err.strip().count("\n") == 0 and "no CUDA GPU is available" in err, err
    assert sorted(p.name for p in cache.iterdir()) == []  # no -o folder, no statistics cache


def test_bfloat16_on_cpu_end_to_end(tiny_checkpoint, cache, run_cli):
    """On a checkpoint stored in bfloat16 (as SmolLM2 is), so that both dtypes load the same weights."""
    import shutil

    from transformers import AutoModelForCausalLM

    from attnlab.nbl.io import load
    from attnlab.nbl.replace import LinearAttention
    from attnlab.nbl.stats import Stats

    ckpt = cache / "bf16-model"
    AutoModelForCausalLM.from_pretrained(tiny_checkpoint).to(torch.bfloat16).save_pretrained(ckpt)
    for f in tiny_checkpoint.iterdir():
        if not (ckpt / f.name).exists():
            shutil.copy(f, ckpt / f.name)
    tiny_checkpoint = ckpt
    dev = ["--device", "cpu", "--dtype", "bfloat16"]
    rc, _, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, *dev, "-o", cache / "rank")
    assert rc == 0, err
    config = json.loads((cache / "rank" / "record.json").read_text())["config"]
    assert (config["device"], config["dtype"]) == ("cpu", "bfloat16")
    (path,) = (cache / "cache" / "nbl").glob("stats-*")
    stats = Stats.load(path)
    assert all(t.dtype == torch.float64 for s in stats.layers.values() for t in (s.mean_x, s.m2_xx, s.m2_xa))

    # the same weights in float32: the dtype is part of the model's fingerprint, so bf16 statistics are refused
    rc, _, err = run_cli("nbl", "rank", tiny_checkpoint, *CAL, "--stats", path)
    assert rc == 2 and "collected on another model" in err

    rc, out, err = run_cli("nbl", "apply", tiny_checkpoint, "--layers", "2", *CAL, *dev, "-o", cache / "m", "--json")
    assert rc == 0, err
    record = json.loads((cache / "m" / "record.json").read_text())
    assert (record["config"]["device"], record["config"]["dtype"]) == ("cpu", "bfloat16")
    assert "--dtype bfloat16" in record["command"]
    assert len(list((cache / "cache" / "nbl").glob("stats-*"))) == 1  # rank's statistics reused

    model = load(cache / "m", "bfloat16")
    linear = [m for m in model.modules() if isinstance(m, LinearAttention)]
    assert len(linear) == 2 and all(m.linear.weight.dtype == torch.bfloat16 for m in linear)
    from safetensors import safe_open

    with safe_open(str(cache / "m" / "model.safetensors"), framework="pt") as f:  # maps stored as the checkpoint is
        assert {f.get_slice(n).get_dtype() for n in f.keys()} == {"BF16"}
        assert sum(".linear." in n for n in f.keys()) == 4

    rc, out, err = run_cli("nbl", "eval", cache / "m", "--against", tiny_checkpoint, "--tokens", "128",
                           "--seq-len", "32", "--greedy-tokens", "4", *dev, "--json", "-o", cache / "eval")
    assert rc == 0, err
    assert json.loads(out)["perplexity"] > 1
    config = json.loads((cache / "eval" / "record.json").read_text())["config"]
    assert (config["device"], config["dtype"]) == ("cpu", "bfloat16")
