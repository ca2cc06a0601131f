import shlex

import pytest

from attnlab.cli import main
from attnlab.core.records import RunRecord
from attnlab.depth import tour as depth_tour
from attnlab.depth.sweep import SweepConfig

TINY_SWEEP = SweepConfig(budgets=[3000], depths=[1, 2], seeds=[0], tokens=192, batch_size=4, seq_len=16,
                         head_dim=8, eval_tokens=256, tolerance=0.2, warmup_steps=1)


def _without_seconds(table) -> list[list]:
    """The rows without the timing column, which differs from run to run."""
    keep = [j for j, c in enumerate(table.columns) if c != "s"]
    return [[r[j] for j in keep] for r in table.rows]


def test_quick_tour_shape_and_commands(tmp_path, monkeypatch, capsys):
    """The quick profile with a tiny sweep: every table that names a command is what that command writes."""
    monkeypatch.setitem(depth_tour.SWEEPS, "quick", TINY_SWEEP)
    rec = depth_tour.tour(tmp_path / "step", seed=0)
    assert rec.config["profile"] == "quick" and rec.command == "attnlab tour --only depth"
    assert set(depth_tour.EXPECTED_SECONDS) == {"quick", "full"} and any("--full" in n for n in rec.notes)
    assert rec.metrics["ranks_matching_closed_form"] == "8/8" and rec.metrics["rank_L2_d4_head_dim_1"] == 69
    for name in ("frontier.png", "separation.png", "sweep/sweep.png"):
        assert (tmp_path / "step" / name).stat().st_size > 10_000
    by_command = [t for t in rec.tables if t.command]
    assert len(by_command) == 4
    for i, table in enumerate(by_command):
        out = tmp_path / f"cmd{i}"
        argv = shlex.split(table.command)[1:] + ["-o", str(out), "--quiet"]
        assert main(argv) == 0, table.command
        replay = RunRecord.load(out / "record.json").tables
        match = next(t for t in replay if t.columns == table.columns)
        assert _without_seconds(match) == _without_seconds(table), table.command
    capsys.readouterr()


@pytest.mark.slow
def test_tour_renders(tmp_path):
    """The whole quick tour through the runner (about 30 s on 2 cores)."""
    from attnlab.tour import run_tour

    result = run_tour(tmp_path / "rep", seed=0, only=["depth"], quiet=True)
    assert result["status"] == {"depth": "ok"}
    html = (tmp_path / "rep" / "index.html").read_text()
    assert html.count("<img") == 3 and "Exact GF(p) rank" in html and "attnlab depth plan --params" in html
