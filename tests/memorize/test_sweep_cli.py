import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.core.atomic import read_jsonl
from attnlab.core.errors import AttnlabError
from attnlab.memorize.plots import plot_sweep
from attnlab.memorize.sweep import LOG, expand, run_sweep

TINY = {"base": {"n_pairs": 4, "seq_len": 2, "vocab": 8, "n_classes": 4, "d_model": 16, "n_heads": 2, "n_layers": 1,
                 "d_ff": 32, "max_steps": 40, "m_max": 8, "restarts": 2, "train_steps": 5},
        "experiments": {"n_pairs": {"n_pairs": [4, 8]}, "seq_len": {"seq_len": [1, 2]},
                        "gen_steps": {"gen_steps": [0, 1]}, "rank": {"rank": [1, 2]},
                        "init": {"variants": [{"init": "gaussian"}, {"init": "identity"}]}}}


def test_expand_grid_variants_and_dedup():
    points = expand({**TINY, "seeds": [0, 1]})
    assert len(points["n_pairs"]) == 4 and len(points["init"]) == 4
    assert {p["seed"] for p in points["rank"]} == {0, 1}
    with pytest.raises(AttnlabError, match="unknown settings"):
        expand({"experiments": {"x": {"n_pair": [1]}}})
    with pytest.raises(AttnlabError, match="unknown sweep config keys"):
        expand({"experiment": {}})


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    rows = run_sweep(TINY, out, progress=False)
    return out, rows


def test_sweep_writes_one_line_per_probe_and_one_result_per_point(tiny_sweep):
    out, rows = tiny_sweep
    lines = read_jsonl(out / LOG)
    probes = [r for r in lines if r["kind"] == "probe"]
    assert len(rows) == 7  # 10 grid entries, 4 of them the base point (n_pairs=4, seq_len=2, T=0, gaussian)
    assert sum(r["n_probes"] for r in rows) == len(probes)
    assert len({(p["point"], p["m"], p["restart"]) for p in probes}) == len(probes)
    base = [r for r in rows if len(r["experiments"]) > 1]
    assert len(base) == 1 and set(base[0]["experiments"]) == {"n_pairs", "seq_len", "gen_steps", "init"}
    assert yaml.safe_load((out / "config.yaml").read_text())["base"]["max_steps"] == 40


def _copy(out: Path, to: Path) -> Path:
    """A copy of a sweep folder (its marker, config and log; not its figures)."""
    to.mkdir()
    for name in (".attnlab.json", "config.yaml", LOG):
        (to / name).write_bytes((out / name).read_bytes())
    return to


def test_sweep_resumes_after_interruption(tiny_sweep, tmp_path, capsys):
    out, rows = tiny_sweep
    lines = (out / LOG).read_text().splitlines()
    # simulate a crash: drop the last point's result and its last probe, and leave a torn line
    last_point = json.loads(lines[-1])["point"]
    kept = lines[:-2]
    tmp_path = _copy(out, tmp_path / "copy")
    (tmp_path / LOG).write_text("\n".join(kept) + "\n" + lines[-2][:25])
    resumed = run_sweep(TINY, tmp_path, progress=False)
    assert capsys.readouterr().err.strip() == f"attnlab: resuming the memorize sweep in {tmp_path}"
    new = read_jsonl(tmp_path / LOG)
    assert sorted((r["point"], r["m_star"]) for r in resumed) == sorted((r["point"], r["m_star"]) for r in rows)
    probes = [r for r in new if r["kind"] == "probe"]
    assert len(probes) == len({(p["point"], p["m"], p["restart"]) for p in probes})  # nothing run twice
    assert sum(1 for r in new if r["kind"] == "result" and r["point"] == last_point) == 1
    again = run_sweep(TINY, tmp_path, progress=False)  # finished: nothing new
    assert len(read_jsonl(tmp_path / LOG)) == len(new) and len(again) == len(resumed)


SMALL = {"base": TINY["base"], "experiments": {"n_pairs": {"n_pairs": [4, 6]}}}


def _outcome(rows: list[dict]) -> list[tuple]:
    return sorted((r["point"], r["m_star"], r["steps"], r["exact_accuracy"]) for r in rows)


@pytest.fixture(scope="module")
def serial_small(tmp_path_factory):
    return run_sweep(SMALL, tmp_path_factory.mktemp("serial"), progress=False)


def test_sweep_with_worker_processes_gives_the_serial_results_with_their_threads(serial_small, tmp_path):
    """Two worker processes give the results of one (same machine, same thread count: the same computation);
    ``threads`` is each worker's torch thread count."""
    rows = run_sweep(SMALL, tmp_path / "parallel", workers=2, threads=2, progress=False)
    assert _outcome(rows) == _outcome(serial_small)
    assert {r["threads"] for r in rows} == {2} and {r["threads"] for r in serial_small} == {1}


def test_sweep_on_ray_gives_the_local_results(serial_small, tmp_path, ray_local):
    rows = run_sweep(SMALL, tmp_path / "ray", backend="ray", progress=False, quiet=True)
    assert [o[:3] for o in _outcome(rows)] == [o[:3] for o in _outcome(serial_small)]
    for a, b in zip(_outcome(rows), _outcome(serial_small), strict=True):
        assert a[3] == pytest.approx(b[3], rel=1e-6)


def test_plots_write_pngs(tiny_sweep, tmp_path):
    out, _ = tiny_sweep
    summary, figures = plot_sweep(out, tmp_path, seed=0)
    names = {Path(p).name for p, _ in figures}
    assert {"mstar_vs_T.png", "mstar_vs_rank.png", "mstar_vs_init.png"} <= names
    for p, _ in figures:
        assert Path(p).read_bytes()[:4] == b"\x89PNG" and Path(p).stat().st_size > 2000
    assert set(summary["tables"]) >= {"n_pairs", "seq_len", "gen_steps", "rank", "init"}


def test_cli_search_json(capsys):
    code = main(["memorize", "search", "--n-pairs", "4", "--seq-len", "2", "--vocab", "8", "--n-classes", "4",
                 "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--max-steps", "60",
                 "--m-max", "8", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"m_star", "exact_accuracy", "steps", "probes"} <= set(out)
    assert out["probes"] and all({"m", "restart", "memorized", "steps"} <= set(p) for p in out["probes"])
    assert out["settings"]["seed"] == 0
    if out["m_star"]:
        assert out["exact_accuracy"] == 1.0


@pytest.mark.parametrize("argv, words", [
    (["--n-pairs", "100", "--seq-len", "1", "--vocab", "8"], "distinct inputs"),
    (["--rank", "9", "--n-classes", "8"], "above the dimension"),
    (["--gen-steps", "1", "--target", "every", "--n-classes", "8"], "target='last'"),
    (["--d-model", "10", "--n-heads", "4"], "divisible"),
    (["--n-pairs", "0"], "must be an integer >= 1"),
    (["--lr", "nan"], "must be a finite number > 0"),
])
def test_cli_bad_input_exit_2_one_line(capsys, argv, words):
    assert main(["memorize", "search", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_cli_plot_and_missing_dirs(tiny_sweep, capsys):
    out, _ = tiny_sweep
    assert main(["memorize", "plot", str(out), "--n-boot", "100", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert Path(res["record"]).exists() and res["figures"]
    assert main(["memorize", "plot", str(out / "nope")]) == 2
    assert "is not a memorize sweep folder" in capsys.readouterr().err


def test_cli_peft_json(capsys):
    code = main(["memorize", "peft", "--method", "prefix", "--n-pairs", "4", "--seq-len", "2", "--vocab", "16",
                 "--n-classes", "4", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32",
                 "--max-steps", "30", "--m-max", "2", "--restarts", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "prefix" and {"m_star", "exact_accuracy", "steps", "probes"} <= set(out)
    assert all(p["trainable_params"] == 2 * 1 * 16 * p["m"] for p in out["probes"])


def test_point_ids_ignore_late_settings_at_their_default():
    """Logs written before m_start existed still resume: at its default it does not enter a point's id."""
    from attnlab.memorize.sweep import DEFAULTS, point_id

    before = {k: v for k, v in DEFAULTS.items() if k != "m_start"}
    assert point_id(DEFAULTS) == point_id(before)
    assert point_id({**DEFAULTS, "m_start": 16}) != point_id(DEFAULTS)


def test_sweep_rejects_a_start_above_m_max_before_any_work(tmp_path):
    config = {"base": {**TINY["base"], "m_start": 16}, "experiments": {"n_pairs": {"n_pairs": [4]}}}
    with pytest.raises(AttnlabError, match="m_start=16 must be in 1..m_max=8"):
        run_sweep(config, tmp_path / "sweep", progress=False)
    assert not (tmp_path / "sweep").exists()


def test_another_config_is_refused_and_the_folder_kept(tiny_sweep):
    out, _ = tiny_sweep
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = {**TINY, "base": {**TINY["base"], "max_steps": 41}}
    with pytest.raises(AttnlabError, match="--overwrite"):
        run_sweep(other, out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the worker count is how fast, not what: the same run
    run_sweep({**TINY, "workers": 2}, _copy(out, out.parent / "workers"), progress=False, quiet=True)


MALFORMED = ['[1, 2]', '"text"', '{"kind": "probe"}', '{"kind": ["probe"]}',
             '{"kind": "result", "point": 5, "m_star": 3}',
             '{"kind": "probe", "point": "x", "m": true, "restart": 0, "memorized": false, "steps": 1, '
             '"exact_accuracy": 0.5, "seconds": 0.1}']


@pytest.mark.parametrize("command", ["sweep", "plot"])
def test_valid_json_lines_of_the_wrong_shape_are_reported_once_and_skipped(tiny_sweep, tmp_path, capsys, command):
    out, rows = tiny_sweep
    copy = _copy(out, tmp_path / "copy")
    lines = (out / LOG).read_text().splitlines()
    (copy / LOG).write_text("\n".join(lines[:3] + MALFORMED + lines[3:]) + "\n")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    argv = ["sweep", str(tmp_path / "tiny.yaml"), "-o", str(copy)] if command == "sweep" else ["plot", str(copy)]
    assert main(["memorize", *argv]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "resuming" not in line]
    assert len(err) == 1 and err[0].startswith(f"attnlab: skipped {len(MALFORMED)} line(s) of {copy / LOG} that "
                                               "are not lines of a memorize sweep (line 4: not a probe or a result")
    assert len(read_jsonl(copy / LOG)) == len(lines) + len(MALFORMED)  # reported, not rewritten


def test_array_tasks_sharing_one_folder_run_each_point_once(tmp_path):
    """Three `attnlab memorize sweep` processes started at once on one folder (a Slurm job array on a shared
    filesystem): every point is searched once, each probe is logged once, and the plots count each point once."""
    import subprocess
    import sys

    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**SMALL, "seeds": [0, 1, 2]}))
    argv = [sys.executable, "-m", "attnlab", "memorize", "sweep", str(tmp_path / "grid.yaml"), "-o",
            str(tmp_path / "shared"), "--quiet"]
    tasks = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert all(t.wait(timeout=600) == 0 for t in tasks), [t.stderr.read() for t in tasks]
    lines = read_jsonl(tmp_path / "shared" / LOG)
    results = [r["point"] for r in lines if r["kind"] == "result"]
    probes = [(r["point"], r["m"], r["restart"]) for r in lines if r["kind"] == "probe"]
    assert len(results) == len(set(results)) == 6 and len(probes) == len(set(probes))
    assert main(["memorize", "plot", str(tmp_path / "shared"), "--quiet"]) == 0


PM = {"base": {**TINY["base"], "prompt_seeds": 5, "short_steps": 10},
      "experiments": {"n_pairs": {"n_pairs": [4, 6]}}}


def test_a_p_of_m_sweep_logs_every_seed_and_resumes_without_refitting(tmp_path, capsys):
    out = tmp_path / "pm"
    rows = run_sweep(PM, out, progress=False)
    lines = read_jsonl(out / LOG)
    for row in rows:
        probes = [p for p in lines if p["kind"] == "probe" and p["point"] == row["point"]]
        assert row["n_probes"] == len(probes) == 5 * len(row["p"]) and row["budget"] == 40
        assert {p["restart"] for p in probes} == set(range(5)) and row["budget_short"] == 10
        for m, p in row["p"].items():
            fits = [x for x in probes if x["m"] == int(m)]
            assert p == sum(x["memorized"] for x in fits) / 5
            assert row["p_short"][m] == sum(x["memorized"] and x["steps"] <= 10 for x in fits) / 5
        ok = [int(m) for m, p in row["p"].items() if p >= 0.5]
        assert row["m_star"] == (min(ok) if ok else None)
    from attnlab.memorize.plots import sweep_record

    table = next(t for t in sweep_record(out, n_boot=50).tables if t.title == "m* against n_pairs")
    assert "95% interval" in table.columns and "m*_0.5 within 10 steps" in table.columns
    # a crash after one seed's probe of the last length: the rerun fits the four other seeds there, nothing else
    text = (out / LOG).read_text().splitlines()
    last = json.loads(text[-1])["point"]
    probes = [i for i, line in enumerate(text) if json.loads(line).get("point") == last and '"probe"' in line]
    copy = _copy(out, tmp_path / "copy")
    (copy / LOG).write_text("\n".join(text[:probes[-5] + 1]) + "\n")
    resumed = run_sweep(PM, copy, progress=False)
    capsys.readouterr()
    new = read_jsonl(copy / LOG)
    assert len(new) == len(lines) and len({(p["point"], p["m"], p["restart"]) for p in new if p["kind"] == "probe"}) \
        == len(lines) - len(rows)  # the four missing fits, each once; nothing fitted twice
    replayed = [(r["point"], r["m_star"], r["m_star_short"], r["p"]) for r in resumed if r["point"] != last]
    assert replayed == [(r["point"], r["m_star"], r["m_star_short"], r["p"]) for r in rows if r["point"] != last]


def test_old_point_ids_keep_without_the_p_of_m_settings():
    from attnlab.memorize.sweep import DEFAULTS, point_id

    before = {k: v for k, v in DEFAULTS.items() if k not in ("prompt_seeds", "short_steps")}
    assert point_id(DEFAULTS) == point_id(before) != point_id({**DEFAULTS, "prompt_seeds": 5})


def test_an_lr_grid_per_setting_is_tabled_and_the_best_lr_taken_per_seed(tmp_path):
    """Rank and init with a prompt-lr grid (issue 14, item 4): every fit is tabled with its lr, and the summary
    takes, per setting and seed, the lr with the smallest m* (a failure is worse than any m*)."""
    from attnlab.memorize.plots import sweep_record

    grid = {"base": {**TINY["base"], "prompt_seeds": 5, "short_steps": 10}, "seeds": [0, 1],
            "experiments": {"init": {"lr": [0.003, 0.3], "variants": [{"init": "gaussian"}, {"init": "identity"}]},
                            "rank": {"lr": [0.003, 0.3], "rank": [None, 1]},
                            "n_pairs": {"lr": [0.1, 0.3], "n_pairs": [4, 6]}}}  # both lrs memorize here
    out = tmp_path / "grid"
    rows = run_sweep(grid, out, progress=False)
    from attnlab.core.runtime import cpu_model

    assert all(r["machine"] == cpu_model() and r["torch"] == torch.__version__ for r in rows)  # per result line
    record = sweep_record(out, n_boot=20)
    tables = {t.title: t for t in record.tables}
    assert "lr" in tables["m* against backbone init"].columns and "lr" in tables["m* against rank"].columns
    names = {"init": lambda s: "identity" if s["init"] == "identity" else f"gaussian x{s['gain']:g}",
             "rank": lambda s: "random (4)" if s["rank"] is None else str(s["rank"]),  # random labels: full rank
             "n_pairs": lambda s: str(s["n_pairs"])}
    for exp, label in names.items():
        best = tables[f"m* against {exp}: each seed at each lr, and the best lr"]
        low, high = grid["experiments"][exp]["lr"]
        assert best.columns[2:] == [f"m* at lr {low:g}", f"m* at lr {high:g}", "best m*", "best lr"]
        assert len(best.rows) == 4
        for name, seed, at_low, at_high, m_best, lr_best in best.rows:
            fits = {r["settings"]["lr"]: r["m_star"] for r in rows if exp in r["experiments"]
                    and r["settings"]["seed"] == seed and label(r["settings"]) == name}
            assert [at_low, at_high] == [fits[low], fits[high]]
            ok = [m for m in fits.values() if m]
            assert m_best == (min(ok) if ok else None)
            assert lr_best == (min(lr for lr, m in fits.items() if m == m_best) if ok else None)
    assert {Path(f.path).name for f in record.figures} >= {"mstar_vs_rank.png", "mstar_vs_init.png"}
    paired = tables["m* against backbone init, paired by seed: ratio to gaussian x3"]
    assert [r[0] for r in paired.rows] == ["identity"]
    best = tables["m* against n_pairs: each seed at each lr, and the best lr"].rows
    if len({int(r[0]) for r in best if r[4]}) >= 2:  # the n_pairs fit runs over each (n_pairs, seed) at its best lr
        assert record.metrics["alpha_n_pairs"] is not None
        from attnlab.memorize.plots import summarize
        from attnlab.memorize.sweep import results

        assert summarize(results(out), n_boot=20)["power_law_n_pairs"]["n_points"] == sum(1 for r in best if r[4])


def test_inits_are_compared_paired_by_seed_with_a_t_interval_on_the_log_ratio():
    """Each init's m* against the first init's on the same seed: the geometric-mean ratio with a 95% t interval
    over the seeds where both have an m*; a seed where either fails is counted, not imputed."""
    from scipy.stats import t as student_t

    from attnlab.memorize.plots import _label_init, _paired

    def row(init, gain, seed, m_star):
        return {"settings": {"init": init, "gain": gain, "seed": seed}, "m_star": m_star}

    first = [8, 8, 10, None]
    other = [4, 8, 5, 6]
    rows = [row("gaussian", 3.0, s, m) for s, m in enumerate(first)] + \
           [row("orthogonal", 3.0, s, m) for s, m in enumerate(other)] + [row("identity", 1.0, 0, None)]
    (name, n, ratio, low, high, left), (none_name, *none) = _paired(rows, _label_init)
    logs = np.log([4 / 8, 8 / 8, 5 / 10])
    half = student_t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
    assert (name, n, left) == ("orthogonal x3", 3, 1)
    assert ratio == pytest.approx(np.exp(logs.mean()), abs=1e-3)
    assert (low, high) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)), abs=1e-3)
    assert none_name == "identity" and none == [0, None, None, None, 4]
