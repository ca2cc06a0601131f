import json

import pytest


def test_plan_json_and_text(run_cli):
    rc, out, err = run_cli("depth", "plan", "--params", "1e12", "--json")
    assert rc == 0
    data = json.loads(out)
    fit = next(r for r in data["rows"] if r["rule"] == "levine_fit")
    assert fit["depth"] == 95 and abs(fit["width"] - 29.7e3) < 300
    rc, out, _ = run_cli("depth", "plan", "--params", "1.3e9", "--vocab", "50257", "--seq-len", "2048", "--known")
    assert rc == 0 and "levine_fit" in out and "GPT-3 175B" in out and "too deep" in out


def test_rank_json(run_cli):
    rc, out, _ = run_cli("depth", "rank", "--depths", "1", "2", "--widths", "2", "4", "--json")
    assert rc == 0
    rows = json.loads(out)["results"]
    assert [r["rank"] for r in rows] == [3, 5, 15, 70] and all(r["matches_closed_form"] for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["depth", "plan", "--params", "100"], "too small for any depth"),
    (["depth", "plan", "--params", "abc"], "expected a positive number"),
    (["depth", "plan", "--params", "1e6", "--seq-len", "64"], "give --vocab"),
    (["depth", "rank", "--depths", "1", "--widths", "3", "--heads", "2"], "not divisible by 2 heads"),
    (["depth", "rank", "--depths", "5", "--widths", "4"], "templates"),
    (["depth", "sweep", "/no/such.yaml", "-o", "/tmp/x"], "sweep config not found"),
    (["depth", "plot", "/no/such/dir"], "not a directory"),
])
def test_bad_input_one_line_exit_2(run_cli, argv, message):
    rc, out, err = run_cli(*argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


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
    rc, stdout, _ = run_cli("depth", "plot", out)
    assert rc == 0 and "mean loss" in stdout
