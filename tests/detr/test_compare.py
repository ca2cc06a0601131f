"""`detr compare` as a grid of :mod:`attnlab.core.grid`: the same runs locally and on Ray, folders written
before the log resume from their checkpoints, each job's resources."""

import json
from pathlib import Path

import pytest

from attnlab.detr import compare
from attnlab.detr.compare import (
    LOG,
    comparison_log,
    fmt_paired,
    paired_t_interval,
    paired_table,
    run_compare,
    take_off_table,
)
from attnlab.detr.train import CHECKPOINT, TrainConfig, read_checkpoint

from .conftest import TINY_MODEL

TRAIN = ["--d-model", "32", "--queries", "8", "--batch-size", "8", "--image-size", "32", "--epochs", "1",
         "--device", "cpu", "--quiet", "--threads", "1", "--seeds", "1"]
RUNS = ["baseline-seed0", "dac-seed0"]


@pytest.fixture
def no_curves(monkeypatch):
    """Summaries without curves.png (drawn after every run, it would take most of these tests' time; the tour
    test draws it)."""
    monkeypatch.setattr(compare, "plot_curves", lambda *args, **kwargs: None)


def _base(data: Path) -> TrainConfig:
    return TrainConfig(data=str(data), epochs=1, batch_size=8, image_size=32, device="cpu", model=TINY_MODEL)


def test_compare_runs_the_same_grid_locally_and_on_ray(run_cli, tiny_data, tmp_path, ray_local, no_curves):
    rows, final = {}, {}
    for backend, flags in (("local", ["--jobs", "1", "--workers", "0"]), ("ray", ["--backend", "ray"])):
        out = tmp_path / backend
        rc, stdout, err = run_cli("detr", "compare", "--data", tiny_data, *TRAIN, *flags, "--json", "-o", out)
        assert rc == 0, err
        assert json.loads(stdout)["runs_done"] == {"baseline": [0], "dac": [0]}
        rows[backend] = comparison_log(out).results()
        final[backend] = {run: read_checkpoint(out / run / CHECKPOINT)[1]["history"][-1] for run in RUNS}
    assert sorted(rows["local"]) == sorted(rows["ray"]) == RUNS
    for run in RUNS:
        local, ray = rows["local"][run], rows["ray"][run]
        assert (local["variant"], local["seed"], local["epochs"]) == (ray["variant"], ray["seed"], ray["epochs"])
        for metric in ("AP", "AP50", "AP75"):
            assert local[metric] == pytest.approx(ray[metric], rel=1e-6, abs=1e-6)
        assert final["local"][run]["loss"] == pytest.approx(final["ray"][run]["loss"], rel=1e-6)  # same training


def test_a_folder_without_its_log_resumes_from_checkpoints_and_adds_seeds(tiny_data, tmp_path, monkeypatch,
                                                                            no_curves):
    out, base = tmp_path / "cmp", _base(tiny_data)
    run_compare(base, out, [0], progress=False, quiet=True)
    before = comparison_log(out).results()
    (out / LOG).unlink()  # a comparison written before runs.jsonl existed
    trained: list[str] = []
    real = compare.train

    def train(cfg, path, **kw):
        trained.append(Path(path).name)
        return real(cfg, path, **kw)

    monkeypatch.setattr(compare, "train", train)
    summary = run_compare(base, out, [1], progress=False, quiet=True)
    assert sorted(trained) == ["baseline-seed1", "dac-seed1"]  # seed 0's finished runs were not retrained
    rows = comparison_log(out).results()
    assert sorted(rows) == sorted([*RUNS, "baseline-seed1", "dac-seed1"])
    assert {run: rows[run] for run in RUNS} == before
    assert summary["seeds"] == [0, 1] and summary["runs_done"] == {"baseline": [0, 1], "dac": [0, 1]}
    final = summary["paired"][-1]
    assert (final["budget"], final["seeds"]) == ("100%", [0, 1])
    assert final["AP"]["diffs"] == pytest.approx([rows[f"dac-seed{s}"]["AP"] - rows[f"baseline-seed{s}"]["AP"]
                                                  for s in (0, 1)])
    assert "DAC - baseline, paired by seed" in (out / "summary.md").read_text(encoding="utf-8")
    trained.clear()
    run_compare(base, out, [0, 1], progress=False, quiet=True)
    assert trained == []


def test_paired_t_interval_is_the_student_t_interval_of_the_differences():
    p = paired_t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / 3 ** 0.5               # t_{0.975, 2} * sd 1 / sqrt(3)
    assert (p["n"], p["mean"], p["sd"]) == (3, 2.0, 1.0)
    assert (p["low"], p["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert fmt_paired(p) == "+2.000 [-0.484, +4.484]"
    one = paired_t_interval([0.25])
    assert (one["low"], one["high"]) == (None, None) and fmt_paired(one) == "+0.250"


def test_paired_table_pairs_runs_by_seed_and_skips_unevaluated_epochs():
    def hist(*aps):
        return [{"epoch": e, "step": 10 * e, "AP": ap, "AP50": None if ap is None else 2 * ap}
                for e, ap in enumerate(aps, start=1)]

    histories = {"baseline": {0: hist(0.1, None, 0.1, 0.1), 1: hist(0.5, None, 0.5, 0.5),
                              2: hist(0.9, None, 0.9, 0.9)},
                 "dac": {1: hist(0.6, None, 0.6, 0.6), 0: hist(0.3, None, 0.3, 0.3)}}  # seed 2 unfinished
    rows = paired_table(histories, epochs=4)
    assert [r["budget"] for r in rows] == ["25%", "75%", "100%"]        # epoch 2 was not evaluated
    assert all(r["seeds"] == [0, 1] for r in rows)
    assert rows[-1]["AP"]["diffs"] == pytest.approx([0.2, 0.1])          # by seed, not by insertion order
    assert rows[-1]["AP50"]["diffs"] == pytest.approx([0.4, 0.2])
    assert [r["budget"] for r in paired_table(histories, 4, [("epoch 3", 3), ("epoch 2", 2)])] == ["epoch 3"]


def test_take_off_is_the_first_step_at_half_the_seeds_baseline_final_ap():
    def hist(*aps):
        return [{"epoch": e, "step": 10 * e, "AP": ap} for e, ap in enumerate(aps, start=1)]

    histories = {"baseline": {0: hist(0.0, 0.2, 0.5, 0.6), 1: hist(0.1, 0.3, 0.3, 0.4), 2: hist(0.1, 0.2, 0.3, 0.4)},
                 "dac": {0: hist(0.4, 0.5, 0.6, 0.7), 1: hist(0.0, 0.1, 0.1, 0.19), 2: hist(0.1, 0.2)}}
    t = take_off_table(histories, epochs=4)
    assert [r["seed"] for r in t["runs"]] == [0, 1]                     # seed 2's DAC run is unfinished
    assert [(r["baseline"], r["dac"]) for r in t["runs"]] == [(30, 10), (20, None)]   # levels 0.3 and 0.2
    assert t["dac_never"] == [1] and t["paired"]["diffs"] == [-20.0]
    assert take_off_table({"baseline": {0: hist(0.1)}, "dac": {}}, epochs=1) is None


@pytest.mark.parametrize("device, gpus", [("cpu", 0.0), ("cuda", 0.5)])
def test_each_run_is_a_job_with_its_threads_and_half_a_gpu_on_cuda(tiny_data, tmp_path, monkeypatch, device, gpus):
    seen = {}
    monkeypatch.setattr(compare, "choose_device", lambda preference: device)
    monkeypatch.setattr(compare, "run_grid", lambda fn, jobs, log, **kw: seen.update(fn=fn, jobs=jobs, **kw))
    run_compare(_base(tiny_data), tmp_path / "cmp", [3, 4], workers=2, threads=2, progress=False, quiet=True)
    assert seen["fn"] is compare.train_run and seen["workers"] == 2 and seen["threads"] == 2
    assert [job.key for job in seen["jobs"]] == ["baseline-seed3", "dac-seed3", "baseline-seed4", "dac-seed4"]
    assert {(job.cpus, job.gpus) for job in seen["jobs"]} == {(2, gpus)}
    assert [job.args["config"]["seed"] for job in seen["jobs"]] == [3, 3, 4, 4]
