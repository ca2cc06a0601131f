import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnlab.core.records import RunRecord

COMMITTED_SWEEP = Path(__file__).resolve().parents[2] / "docs" / "results" / "depth_sweep"


def test_plan_json_and_text(run_cli):
    rc, out, err = run_cli("depth", "plan", "--params", "1e12", "--json")
    assert rc == 0
    (data,) = json.loads(out)["plans"]
    fit = next(r for r in data["rows"] if r["rule"] == "levine_fit")
    assert fit["depth"] == 95 and abs(fit["width"] - 29.7e3) < 300
    rc, out, _ = run_cli("depth", "plan", "--params", "1.3e9", "--vocab", "50257", "--seq-len", "2048", "--known")
    assert rc == 0 and "levine_fit" in out and "GPT-3 175B" in out and "too deep" in out


def test_plan_sizes_and_several_budgets(run_cli):
    rc, a, _ = run_cli("depth", "plan", "--params", "1.3B", "--json")
    rc2, b, _ = run_cli("depth", "plan", "--params", "1.3e9", "--json")
    assert rc == rc2 == 0 and a == b
    rc, out, _ = run_cli("depth", "plan", "--params", "350M", "1T", "--json")
    assert rc == 0 and [p["budget"] for p in json.loads(out)["plans"]] == [350e6, 1e12]


def test_count_a_config_a_folder_a_name_and_flags(run_cli, tmp_path):
    from attnlab.depth.params import count, flops, hf_config, known

    arch = known("Qwen2-0.5B")
    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**hf_config(arch), "max_position_embeddings": 32768}))
    results = []
    for argv in ([str(folder / "config.json")], [str(folder)], ["Qwen2-0.5B", "--context", "32768"],
                 ["--family", "qwen2", "--layers", "24", "--width", "896", "--ffn", "4864", "--heads", "14",
                  "--kv-heads", "2", "--vocab", "151936", "--tied", "--context", "32768"]):
        rc, out, err = run_cli("depth", "count", *argv, "--json")
        assert rc == 0, err
        results.append(json.loads(out))
    for r in results:
        assert r["total"] == count(arch)["total"] == 494_032_768 and r["kaplan"] == 12 * 24 * 896 ** 2
        assert r["flops"]["forward"] == flops(arch, 32768)["forward"]
        assert r["parts"]["lm_head"] == 0 and r["laws"]["budget"] == r["non_embedding"]
    rc, out, _ = run_cli("depth", "count", "Qwen2-0.5B")  # rotary: counts, but the FLOPs need a context
    assert rc == 0 and "give --context" in out and "494,032,768" in out
    rc, out, _ = run_cli("depth", "count", "GPT-3 175B")
    assert rc == 0 and "past the fit's too-deep boundary" in out and "174,604,259,328" in out
    out_dir = tmp_path / "rec"
    rc, _, _ = run_cli("depth", "count", "gpt-2", "-o", out_dir)
    rec = RunRecord.load(out_dir / "record.json")
    assert rc == 0 and rec.command == f"attnlab depth count gpt-2 -o {out_dir}" and rec.metrics["total"] == 124_439_808


def test_plan_family(run_cli):
    rc, out, _ = run_cli("depth", "plan", "--params", "1e7", "--family", "llama", "--json")
    (p,) = json.loads(out)["plans"]
    assert rc == 0 and p["family"] == "llama" and "Llama block" in p["convention"]
    assert {"levine_fit", "levine_fit_12Ld2"} <= {r["rule"] for r in p["rows"]}


def test_rank_json(run_cli):
    rc, out, _ = run_cli("depth", "rank", "--depths", "1", "2", "--widths", "2", "4", "--json")
    assert rc == 0
    rows = json.loads(out)["results"]
    assert [r["rank"] for r in rows] == [3, 5, 15, 70] and all(r["matches_closed_form"] for r in rows)
    rc, out, _ = run_cli("depth", "rank", "--depths", "2", "--widths", "4", "--heads", "1", "4", "--json")
    assert [r["rank"] for r in json.loads(out)["results"]] == [70, 69]  # head dimension 1 loses one


def test_records_name_the_command_that_reproduces_them(run_cli, tmp_path):
    out = tmp_path / "plan"
    rc, _, _ = run_cli("depth", "plan", "--params", "1.3B", "1e12", "--known", "-o", out)
    assert rc == 0 and (out / "frontier.png").stat().st_size > 10_000
    rec = RunRecord.load(out / "record.json")
    assert rec.command == f"attnlab depth plan --params 1.3e9 1e12 --known -o {out}"
    assert [r[0] for r in rec.tables[0].rows][:1] == ["1.3e9"] and rec.metrics["levine_fit_1e12"] == "95 x 29632"
    out = tmp_path / "rank"
    rc, _, _ = run_cli("depth", "rank", "--depths", "1", "--widths", "2", "3", "-o", out)
    rec = RunRecord.load(out / "record.json")
    assert rc == 0 and rec.command == f"attnlab depth rank --depths 1 --widths 2 3 --heads 1 -o {out}"
    assert [r[4] for r in rec.tables[0].rows] == [3, 4]


@pytest.mark.parametrize("argv", [["plan", "--params", "1.3B", "--known"],
                                  ["count", "Gemma-7B", "--context", "8192"],
                                  ["rank", "--depths", "1", "--widths", "2"],
                                  ["plot", str(COMMITTED_SWEEP), "-o", "{tmp}/plot"]])
def test_light_commands_import_no_torch(argv, tmp_path):
    code = ("import sys; from attnlab.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'transformers', 'scipy') if m in sys.modules]; "
            "assert rc == 0 and not heavy, (rc, heavy)")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-c", code, "depth", *argv, "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["depth", "plan", "--params", "100"], "too small for any depth"),
    (["depth", "plan", "--params", "abc"], "expected a positive size"),
    (["depth", "plan", "--params", "1e6", "--seq-len", "64"], "give --vocab"),
    (["depth", "rank", "--depths", "1", "--widths", "3", "--heads", "2"], "not divisible by 2 heads"),
    (["depth", "rank", "--depths", "5", "--widths", "4"], "templates"),
    (["depth", "sweep", "/no/such.yaml", "-o", "/tmp/x"], "sweep config not found"),
    (["depth", "plot", "/no/such/dir"], "not a folder"),
    (["depth", "count"], "give a CONFIG"),
    (["depth", "count", "no-such-model"], "neither a config.json nor a published model"),
    (["depth", "count", "gpt-2", "--layers", "3"], "not both"),
    (["depth", "count", "--family", "llama", "--layers", "2", "--width", "64", "--vocab", "9"], "give --ffn"),
    (["depth", "count", "--family", "gpt2", "--layers", "2", "--width", "64", "--vocab", "9", "--kv-heads", "2"],
     "has no --kv-heads"),
    (["depth", "count", "--family", "llama", "--layers", "2", "--width", "64", "--vocab", "9", "--ffn", "9",
      "--heads", "3"], "not divisible by 3 heads"),
])
def test_bad_input_one_line_exit_2(run_cli, argv, message):
    rc, out, err = run_cli(*argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_plot_skips_a_bad_line_and_counts_a_model_once(run_cli, tmp_path):
    copy = shutil.copytree(COMMITTED_SWEEP, tmp_path / "s")  # never write into the repo
    lines = (copy / "results.jsonl").read_text().splitlines()
    with open(copy / "results.jsonl", "a") as f:  # a model logged twice (two processes), a line of another tool
        f.write(lines[0] + "\n" + '{"key": "N1-L1-s0", "loss": 1}\n')
    rc, out, err = run_cli("depth", "plot", copy, "-o", tmp_path / "plot", "--json")
    assert rc == 0 and json.loads(out)["models"] == len(lines)
    assert err.count("\n") == 1 and f"skipped 1 line(s) of {copy / 'results.jsonl'}" in err, err


def test_analyze_prints_the_slope_table_and_json(run_cli, tmp_path):
    """The committed sweep (3 budgets, best depth 1 everywhere): L* per budget beside the paper's, the slope line."""
    rc, out, _ = run_cli("depth", "analyze", COMMITTED_SWEEP, "-o", tmp_path / "b", "--json")
    assert rc == 0 and json.loads(out)["slope"].startswith("slope of L* in ln N: ")
    slope = json.loads(out)["slope_analysis"]
    assert [b["budget"] for b in slope["budgets"]] == [50_000, 150_000, 400_000]
    assert all(b["interval"][0] <= b["L_star"] <= b["interval"][1] for b in slope["budgets"])
    assert set(slope["fit"]) >= {"slope", "interval", "paper_slope", "zero_slope_rejected"}
    rec = RunRecord.load(tmp_path / "b" / "record.json")
    assert rec.command.startswith("attnlab depth analyze ") and rec.tables[-1].columns[-1] == "paper L*"


def test_plot_empty_dir_and_bare_group(run_cli, tmp_path):
    rc, _, err = run_cli("depth", "plot", str(tmp_path))
    assert rc == 2 and "no sweep results" in err
    rc, _, _ = run_cli("depth")
    assert rc == 2


def test_sweep_end_to_end(run_cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("budgets: [3000, 6000]\ndepths: [1, 2]\nseeds: [0, 1]\ntokens: 192\nbatch_size: 4\n"
                   "seq_len: 16\nhead_dim: 8\neval_tokens: 256\ntolerance: 0.2\nwarmup_steps: 1\n")
    out = tmp_path / "out"
    rc, stdout, _ = run_cli("depth", "sweep", cfg, "-o", out, "--json")
    assert rc == 0
    data = json.loads(stdout)
    assert data["models"] == 8 and "best_depth_N3000" in data and "best_depth_N6000" in data
    assert (out / "sweep.png").stat().st_size > 0 and (out / "record.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [b["budget"] for b in summary["budgets"]] == [3000, 6000]
    before = (out / "record.json").read_bytes()
    rc, stdout, _ = run_cli("depth", "plot", out, "-o", tmp_path / "plot")
    assert rc == 0 and "mean loss" in stdout and (tmp_path / "plot" / "sweep.png").exists()
    assert (out / "record.json").read_bytes() == before  # -o leaves the sweep folder alone
    assert RunRecord.load(tmp_path / "plot" / "record.json").command == f"attnlab depth plot {out} -o {tmp_path}/plot"


def _tiny_config(tmp_path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("budgets: [3000]\ndepths: [1, 2]\nseeds: [0]\ntokens: 192\nbatch_size: 4\n"
                   "seq_len: 16\nhead_dim: 8\neval_tokens: 256\ntolerance: 0.2\nwarmup_steps: 1\n")
    return cfg


def test_sweep_cuda_without_cuda_is_one_line_and_writes_nothing(run_cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    rc, stdout, err = run_cli("depth", "sweep", _tiny_config(tmp_path), "-o", out, "--device", "cuda")
    assert rc == 2 and stdout == "" and err.count("\n") == 1 and "no CUDA GPU" in err, err
    assert not out.exists()


def test_sweep_bfloat16_on_cpu_records_device_and_dtype(run_cli, tmp_path):
    out = tmp_path / "out"
    rc, stdout, _ = run_cli("depth", "sweep", _tiny_config(tmp_path), "-o", out, "--device", "cpu",
                            "--dtype", "bfloat16", "--threads", "2", "--json")
    assert rc == 0 and json.loads(stdout)["models"] == 2
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["device"], r["dtype"], r["threads"]) for r in rows} == {("cpu", "bfloat16", 2)}
    rec = RunRecord.load(out / "record.json")
    assert rec.config["device"] == "cpu" and rec.config["dtype"] == "bfloat16"
    assert rec.command.endswith("--dtype bfloat16")
    rc, _, err = run_cli("depth", "sweep", _tiny_config(tmp_path), "-o", out, "--device", "cpu")
    assert rc == 2 and "holds another depth sweep" in err  # float32 is another recipe than bfloat16
