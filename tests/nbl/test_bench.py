"""The speed benchmark's pieces: the random pair (no checkpoint needed) and benchmarks/nbl_gpu.py's path on the CPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig

from attnlab.nbl.bench import bench_pair, random_pair
from attnlab.nbl.replace import replaced_layers

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "nbl_gpu.py"
TINY = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128)


def test_random_pair_shares_every_weight_but_the_replaced_attention():
    assert next(random_pair(TINY, [1], dtype=torch.bfloat16)[0].parameters()).dtype == torch.bfloat16
    model, reference = random_pair(TINY, [1, 3])  # float32: bfloat16 attention on a CPU needs AVX-512
    assert replaced_layers(model) == {1: "nbl", 3: "nbl"} and not replaced_layers(reference)
    ref = reference.state_dict()
    for name, value in model.state_dict().items():
        if name in ref:  # everything kept is the reference's, bit for bit
            assert torch.equal(value, ref[name]), name
    assert not any("layers.1.self_attn" in n or "layers.3.self_attn" in n for n in model.state_dict() if n in ref)
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, reference(ids).logits)  # the maps are in the forward


def test_bench_pair_rows_hold_the_measured_ratio_and_its_ceiling():
    model, reference = random_pair(TINY, [2, 3])
    result = bench_pair(model, reference, prompt_lengths=[16], batch_sizes=[1, 2], decode_tokens=3, repeats=2)
    assert result["replaced"] == 2 and result["layers"] == 4 and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["prefill_speedup"] > 0 and row["decode_speedup"] > 0
        assert row["prefill_ceiling"] > 1 and row["decode_byte_ceiling"] > 1  # less work with layers replaced
        assert row["kv_cache_mb_model"] == row["kv_cache_mb"] / 2  # half the layers keep a KV cache


def test_the_gpu_script_runs_its_path_on_the_cpu_and_refuses_without_cuda(tmp_path):
    spec = importlib.util.spec_from_file_location("nbl_gpu", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tiny.json"
    assert script.main(["--tiny", "--device", "cpu", "--decode", "3", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny" and result["replaced_layers"] == [2, 3] and result["dtype"] == "float32"
    assert [r["prompt"] for r in result["rows"]] == [32, 64]
    assert script.SHAPES["llama3-8b"]["num_hidden_layers"] == 32  # the paper's setting: 12 of 32 replaced
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu.json")], capture_output=True,
                          text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_the_side_by_side_statistics_benchmark_refuses_an_unknown_commit_in_one_line():
    ab = SCRIPT.with_name("nbl_stats_ab.py")
    proc = subprocess.run([sys.executable, str(ab), "--against", "no-such-commit", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no-such-commit" in proc.stderr
