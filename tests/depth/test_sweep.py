import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.core.atomic import read_jsonl
from attnlab.core.errors import AttnlabError
from attnlab.core.runtime import cpu_model
from attnlab.depth import sweep
from attnlab.depth.sweep import SweepConfig, analyze, load_config, run_sweep, shape_for_budget

REPO = Path(__file__).resolve().parents[2]


def tiny(**kw) -> SweepConfig:
    base = dict(budgets=[3000, 6000], depths=[1, 2], seeds=[0], tokens=4 * 16 * 3, batch_size=4, seq_len=16,
                head_dim=8, eval_tokens=256, warmup_steps=1, tolerance=0.2)
    return SweepConfig(**{**base, **kw})


def test_shapes_hit_the_budget():
    for budget in (50_000, 150_000, 400_000):
        for depth in (1, 2, 3, 4, 6, 8):
            width, heads, n = shape_for_budget(budget, depth)
            assert width % heads == 0 and abs(n - budget) <= 0.1 * budget
            assert n == sweep.non_embedding_count(depth, width)
    with pytest.raises(AttnlabError, match="too small for depth 8"):
        shape_for_budget(120, 8)  # width 1 already has 202


def test_committed_config_loads_and_its_results_are_complete(tmp_path, monkeypatch, capsys):
    config = load_config(REPO / "configs/depth/cpu.yaml")
    assert len(config.budgets) >= 3 and len(config.depths) >= 4 and len(config.seeds) >= 2
    assert len(sweep.grid(config)) == len(config.budgets) * len(config.depths) * len(config.seeds)
    copy = shutil.copytree(REPO / "docs/results/depth_sweep", tmp_path / "s")  # never write into the repo
    monkeypatch.setattr(sweep, "train_one", lambda job, config, device="cpu": pytest.fail(f"{job['key']} is not in "
                                                                                  "the results"))
    rows = run_sweep(config, copy, progress=False)
    assert len(rows) == len(sweep.grid(config)) and "resuming the depth sweep" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("budgets: [1000]\ndepths: [1]\nbogus: 1\n", "unknown key"),
    ("budgets: [1000]\n", "missing depths"),
    ("budgets: 1000\ndepths: [1]\n", "non-empty list"),
    ("budgets: [1000]\ndepths: [1]\ntokens: 10\n", "less than one batch"),
    ("budgets: [1000\n", "not valid YAML"),
    ("budgets: [1000]\ndepths: [true]\n", "depths must be a non-empty list of integers"),
    ("budgets: [1000]\ndepths: [1]\nlr: -1\n", "lr must be a learning rate"),
    ("budgets: [1000]\ndepths: [1]\nlr: .nan\n", "lr must be a learning rate"),
    ("budgets: [1000]\ndepths: [1]\nwarmup_steps: -5\n", "warmup_steps must be a non-negative integer"),
    ("budgets: [1000]\ndepths: [1]\nbatch_size: true\n", "batch_size must be a positive integer"),
    ("budgets: [1000]\ndepths: [1]\nweight_decay: 2\n", "weight_decay must be"),
    ("budgets: [1000]\ndepths: [1]\ntolerance: x\n", "tolerance must be"),
    ("budgets: [1000]\ndepths: [1]\ntext: 3\n", "text must be"),
    ("budgets: [1000]\ndepths: [1]\ndtype: float16\n", "dtype must be one of float32, bfloat16"),
    ("budgets: [1000]\ndepths: [1, 2, 1]\n", "depths lists a value twice"),
    ("budgets: [1000]\ndepths: [1]\nseeds: [0, 0]\n", "seeds lists a value twice"),
    ("budgets: [1000]\ndepths: [1]\nlr: 3e-3\n", r"YAML reads 3e-3 as text: write it with a dot, e\.g\. 0\.003"),
    ("budgets: [1000]\ndepths: [1]\nlr: 1.5\n", "lr must be a learning rate in"),
    ("budgets: [1000]\ndepths: [1]\nweight_decay: -0.1\n", "weight_decay must be"),
    ("budgets: [1000]\ndepths: [1]\nwarmup_steps: 1.5\n", "warmup_steps must be a non-negative integer"),
    ("budgets: [1000]\ndepths: [1]\ntokens: 4096\nbatch_size: 8\nseq_len: 16\nwarmup_steps: 32\n",
     r"warmup_steps \(32\) must be less than the 32 training steps"),
    ("budgets: [1000]\ndepths: [1]\nworkers: false\n", "workers must be a positive integer"),
    ("- 1\n", "expected a mapping")])
def test_bad_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(AttnlabError, match=message):
        load_config(path)


def test_sweep_resumes_and_skips_done_lines(tmp_path, monkeypatch):
    out = tmp_path / "s"
    rows = run_sweep(tiny(), out, progress=False, limit=2)
    assert len(rows) == 2 and all(np.isfinite(r["heldout_loss"]) for r in rows)
    with open(out / sweep.RESULTS, "a") as f:  # a crash mid-write leaves a torn line
        f.write('{"key": "N6000-L1')
    calls = []
    real = sweep.train_one
    monkeypatch.setattr(sweep, "train_one", lambda job, config, device="cpu": calls.append(job["key"])
                        or real(job, config, device))
    rows = run_sweep(tiny(), out, progress=False)
    assert sorted(calls) == ["N6000-L1-s0", "N6000-L2-s0"]  # only the unfinished jobs ran
    keys = [r["key"] for r in read_jsonl(out / sweep.RESULTS)]
    assert len(keys) == len(set(keys)) == 4 and len(rows) == 4
    calls.clear()
    run_sweep(tiny(seeds=[0]), out, progress=False)
    assert calls == []
    with pytest.raises(AttnlabError, match="holds another depth sweep"):
        run_sweep(tiny(lr=1e-2), out, progress=False)


def test_same_seed_same_result(tmp_path):
    a = run_sweep(tiny(budgets=[3000], depths=[2]), tmp_path / "a", progress=False)
    b = run_sweep(tiny(budgets=[3000], depths=[2]), tmp_path / "b", progress=False)
    assert a[0]["heldout_loss"] == b[0]["heldout_loss"]
    assert a[0]["tokens"] == 4 * 16 * 3 and a[0]["total_parameters"] > a[0]["non_embedding"]


def test_parallel_workers(tmp_path):
    seen = []
    rows = run_sweep(tiny(), tmp_path, workers=2, progress=False, on_result=seen.append)
    assert [r["key"] for r in rows] == [j["key"] for j in sweep.grid(tiny())]  # grid order, whatever finished first
    assert sorted(r["key"] for r in seen) == sorted(r["key"] for r in rows)
    assert all(r["threads"] == 1 for r in rows)


def test_threads_are_pinned_for_the_sweep_only(tmp_path):
    import torch

    before = torch.get_num_threads()
    (row,) = run_sweep(tiny(budgets=[3000], depths=[1]), tmp_path, threads=2, progress=False)
    assert row["threads"] == 2 and torch.get_num_threads() == before


def test_local_and_ray_backends_train_the_same_models(tmp_path, ray_local):
    config = tiny(budgets=[3000])
    local = run_sweep(config, tmp_path / "local", progress=False)
    on_ray = run_sweep(config, tmp_path / "ray", backend="ray", progress=False, quiet=True)
    assert [r["key"] for r in local] == [r["key"] for r in on_ray] == ["N3000-L1-s0", "N3000-L2-s0"]
    for a, b in zip(local, on_ray, strict=True):
        assert b["heldout_loss"] == pytest.approx(a["heldout_loss"], rel=1e-6)
        assert a["threads"] == b["threads"] == 1


def test_a_model_claimed_by_a_live_process_is_not_trained_again(tmp_path, monkeypatch, capsys):
    """Another process (here a stand-in that holds a claim) is training N3000-L1: this sweep leaves it to
    that process; once the claimant is gone, the next run takes the model over and trains it, once."""
    from attnlab.core.outputs import run_dir

    config = tiny(budgets=[3000])
    out, _ = run_dir(tmp_path / "s", sweep.recipe(config), what="depth sweep")  # the other process made it
    claimant = subprocess.Popen(["sleep", "120"])
    claim = out / "claims" / "N3000-L1-s0.claim"
    claim.parent.mkdir()
    claim.write_text(f"{socket.gethostname()} {claimant.pid} {time.time():.0f}\n")
    calls = []
    real = sweep.train_one
    monkeypatch.setattr(sweep, "train_one", lambda job, config, device="cpu": calls.append(job["key"])
                        or real(job, config, device))
    try:
        rows = run_sweep(config, out, progress=False)
        assert calls == ["N3000-L2-s0"] and [r["key"] for r in rows] == ["N3000-L2-s0"]
        assert "1 job(s) of this depth sweep are running in other processes" in capsys.readouterr().err
        assert claim.exists()  # not ours to remove
    finally:
        claimant.kill()
        claimant.wait()
    rows = run_sweep(config, out, progress=False)  # the claimant died: its claim is taken over
    assert calls == ["N3000-L2-s0", "N3000-L1-s0"] and len(rows) == 2
    keys = [json.loads(line)["key"] for line in (out / sweep.RESULTS).read_text().splitlines()]
    assert sorted(keys) == ["N3000-L1-s0", "N3000-L2-s0"]  # each model logged once


def _rows(table):
    return {f"{b}-{L}-{s}": {"key": f"{b}-{L}-{s}", "budget": b, "depth": L, "seed": s, "width": w, "heads": 1,
                             "non_embedding": b, "heldout_loss": loss} for (b, L, w), losses in table.items()
            for s, loss in enumerate(losses)}


def test_analysis_best_depth_bootstrap_and_fit():
    table = {(100, 1, 10): [2.0, 2.1], (100, 2, 7): [2.3, 2.4],
             (400, 1, 20): [1.9, 1.9], (400, 2, 14): [1.5, 2.2]}
    s = analyze(_rows(table))
    small, big = s["budgets"]
    assert small["best_depth"] == 1 and small["best_p"] == 1.0  # every draw prefers depth 1
    assert big["best_depth"] == 2 and 0.4 < big["best_p"] < 0.6  # 1.5 wins, 2.2 loses: a coin flip
    assert small["depths"][0]["std"] == pytest.approx(np.std([2.0, 2.1], ddof=1))
    # best shapes (1, 10) and (2, 14): ln d = a + b L through both points
    assert s["fit"]["b"] == pytest.approx(np.log(14 / 10)) and s["fit"]["a"] == pytest.approx(np.log(10) - np.log(1.4))
    assert analyze(_rows({(100, 1, 10): [2.0]}))["fit"] is None
    with pytest.raises(AttnlabError, match="no sweep results"):
        analyze({})


def test_summary_reads_each_model_once_and_skips_bad_lines(tmp_path, capsys):
    """Two processes that both logged a model count it once; a line that is not a result is named on stderr
    (one line) and skipped, not an error."""
    rows = list(_rows({(100, 1, 10): [2.0, 2.1], (100, 2, 7): [2.3, 2.4]}).values())
    lines = [json.dumps(r) for r in rows] + [json.dumps({**rows[0], "heldout_loss": 9.0}),  # logged twice
                                             json.dumps({"key": "x", "depth": 1}), "[1, 2]"]
    (tmp_path / sweep.RESULTS).write_text("\n".join(lines) + "\n")
    rec = sweep.summarize(tmp_path, "attnlab depth plot DIR", save_record=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 2 line(s)" in err and "line 6: no 'budget'" in err, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rec.metrics["models"] == summary["models"] == 4
    assert summary["budgets"][0]["depths"][0]["mean"] == pytest.approx(2.05)  # the first line per key


def test_dtype_is_in_the_recipe_and_the_device_is_not(tmp_path):
    assert "dtype" not in sweep.recipe(tiny())  # float32: folders from before dtype existed still resume
    assert sweep.recipe(tiny(dtype="bfloat16"))["dtype"] == "bfloat16"
    out = tmp_path / "s"
    (row,) = run_sweep(tiny(budgets=[3000], depths=[1], dtype="bfloat16"), out, progress=False, device="cpu")
    assert row["device"] == "cpu" and row["dtype"] == "bfloat16" and np.isfinite(row["heldout_loss"])
    assert row["machine"] == cpu_model() and row["torch"] == torch.__version__  # what trained it, per model
    with pytest.raises(AttnlabError, match="holds another depth sweep"):
        run_sweep(tiny(budgets=[3000], depths=[1]), out, progress=False)  # float32 is another recipe


# ---------------------------------------------------------------- the slope design (issue 18, item 3)

GRAMMAR = {"vocab": 32, "topics": 2, "states": 3}


def test_slope_configs_load_with_the_design():
    gpu = load_config(REPO / "configs/depth/slope_gpu.yaml")
    assert gpu.budgets == [500_000, 2_000_000, 8_000_000] and gpu.depths == [1, 2, 4, 8, 16] and len(gpu.seeds) >= 2
    assert gpu.tokens_per_param >= 10 and gpu.source == "hmm" and gpu.dtype == "bfloat16" and gpu.gpu_share < 1
    jobs = sweep.grid(gpu)
    assert [j["seed"] for j in jobs] == sorted(j["seed"] for j in jobs)  # seed-major
    for j in jobs:
        assert abs(j["non_embedding"] - j["budget"]) <= 0.1 * j["budget"]
        assert j["steps"] * gpu.batch_size * gpu.seq_len >= gpu.tokens_per_param * j["non_embedding"]
    cpu = load_config(REPO / "configs/depth/slope_cpu.yaml")
    assert cpu.budgets == [500_000] and sweep.recipe(cpu)["source"] == "hmm"


def test_tokens_per_param_gives_the_step_count():
    config = SweepConfig(budgets=[3000], depths=[1, 2], tokens_per_param=10, batch_size=4, seq_len=16, head_dim=8,
                         warmup_steps=1, tolerance=0.2)
    for job in sweep.grid(config):  # ceil(10 N / 64)
        assert job["steps"] == -(-10 * job["non_embedding"] // 64) and job["steps"] * 64 >= 10 * job["non_embedding"]
    assert config.steps_for(6400) == 1000 and config.steps_for(6401) == 1001
    with pytest.raises(AttnlabError, match=r"warmup_steps \(5000\) must be less than the \d+ training steps of N3000"):
        sweep.grid(SweepConfig(**{**sweep.asdict(config), "warmup_steps": 5000}))


def test_lr_is_scaled_per_width():
    from attnlab.depth.model import GPT

    config = tiny(lr=0.004, lr_base_width=16)
    assert config.lr_scale(64) == 0.25 and tiny().lr_scale(64) == 1.0  # off: every width at the base lr
    hidden, embedding, other = sweep.param_groups(GPT(10, 16, 2, 64, 4), config, 64)
    assert (hidden["lr"], embedding["lr"], other["lr"]) == pytest.approx((0.001, 0.004, 0.004))  # 0.004 x 16/64
    assert all(p.dim() == 2 for p in hidden["params"]) and len(hidden["params"]) == 2 * 4  # qkv, proj, fc, out
    assert len(embedding["params"]) == 2 and embedding["weight_decay"] == config.weight_decay  # token, position
    assert all(p.dim() == 1 for p in other["params"]) and other["weight_decay"] == 0.0
    assert sweep.lr_at(0, 0.004, 10, 100) == pytest.approx(0.0004) and sweep.lr_at(99, 1.0, 10, 100) > 0.1


def test_the_synthetic_source_trains_and_is_in_the_recipe(tmp_path):
    config = SweepConfig(budgets=[3000], depths=[1], source="hmm", hmm=GRAMMAR, tokens_per_param=0.5, batch_size=4,
                         seq_len=16, head_dim=8, eval_tokens=256, warmup_steps=1, tolerance=0.2, lr_base_width=8)
    (row,) = run_sweep(config, tmp_path / "s", progress=False)
    assert row["vocab"] == 32 and row["steps"] == sweep.grid(config)[0]["steps"] and np.isfinite(row["heldout_loss"])
    assert row["hidden_lr"] == pytest.approx(config.lr * 8 / row["width"])
    recipe = sweep.recipe(config)
    assert recipe["source"] == "hmm" and recipe["hmm"] == GRAMMAR and recipe["tokens_per_param"] == 0.5
    assert not {"source", "hmm", "tokens_per_param", "lr_base_width", "gpu_share"} & set(sweep.recipe(tiny()))
    rec = sweep.summarize(tmp_path / "s", "attnlab depth analyze DIR", save_record=False)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["data"]["bayes_loss"] < summary["data"]["unigram_entropy"] < np.log(32) + 1e-9
    assert rec.metrics["bayes_loss"] == round(summary["data"]["bayes_loss"], 4)


@pytest.mark.parametrize("text, message", [
    ("source: hmm\nhmm: {vocab: 1}\n", "hmm: vocab must be an integer >= 2"),
    ("source: hmm\nhmm: {bogus: 1}\n", "hmm: unknown key"),
    ("hmm: {vocab: 64}\n", "hmm sets the grammar of source hmm"),
    ("source: bpe\n", "source must be one of text, hmm"),
    ("tokens_per_param: true\n", "tokens_per_param must be a positive number"),
    ("tokens_per_param: 0\n", "tokens_per_param must be a positive number"),
    ("tokens: 100000\ntokens_per_param: 10\n", "give tokens .* or tokens_per_param, not both"),
    ("lr_base_width: 0\n", "lr_base_width must be a positive integer"),
    ("lr_base_width: 64.5\n", "lr_base_width must be a positive integer"),
    ("gpu_share: 0\n", "gpu_share must be a share of one GPU"),
    ("gpu_share: 2\n", "gpu_share must be a share of one GPU")])
def test_bad_slope_fields(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text("budgets: [1000]\ndepths: [1]\n" + text)
    with pytest.raises(AttnlabError, match=message):
        load_config(path)
