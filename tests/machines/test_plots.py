"""The attention/queue figure (`attnlab machines run --figure`): the picks come from the compiled weights."""

import json

import numpy as np
import pytest

from attnlab.machines.library import library_machine
from attnlab.machines.plots import attention_picks, machine_model
from attnlab.machines.simulate import run_machine

PNG = b"\x89PNG\r\n\x1a\n"


def test_attention_picks_the_oldest_token_of_every_window():
    tm, trace = library_machine("bb4"), []
    r = run_machine(tm, "", executor="table", trace=trace)
    model, _ = machine_model(tm, r.window)
    picks = attention_picks(model, trace)
    assert len(picks) == r.tokens == 804 and np.array_equal(picks, np.arange(804))


def test_attention_picks_follow_the_weights():
    """With the RPE's 'oldest' and 'intermediate' values swapped the picks move: they are computed, not assumed."""
    tm, trace = library_machine("bb2"), []
    r = run_machine(tm, "", executor="table", trace=trace)
    model, _ = machine_model(tm, r.window)
    model.weights["rpe"][[1, 2]] = model.weights["rpe"][[2, 1]]
    assert not np.array_equal(attention_picks(model, trace), np.arange(r.tokens))


def test_run_figure_writes_a_png(run_cli, tmp_path):
    path = tmp_path / "bb2.png"
    rc, out, err = run_cli("machines", "run", "bb2", "--figure", str(path), "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert path.read_bytes()[:8] == PNG and d["figure"] == str(path)
    assert d["figure_tokens"] == d["run_tokens"] == d["tokens"] == 13 and d["oldest_picks"] == 13


def test_run_figure_of_a_post_machine_and_a_long_run(run_cli, tmp_path):
    rc, out, err = run_cli("machines", "run", "rotate", "--figure", str(tmp_path / "r.png"), "--json")
    assert rc == 0 and (tmp_path / "r.png").read_bytes()[:8] == PNG, err
    rc, out, err = run_cli("machines", "run", "bb4", "--figure", str(tmp_path / "b.png"), "--json")
    d = json.loads(out)
    assert rc == 0 and d["figure_tokens"] == 240 < d["run_tokens"] == d["tokens"] and d["oldest_picks"] == 240


@pytest.mark.parametrize("argv", [["--figure", "/dev/null/x.png"], ["--figure", "{d}/f.png/x.png"],
                                  ["--figure", "{d}/f.png"], ["--executor", "reference", "--figure", "{d}/n.png"]])
def test_run_figure_refuses_exit_2(run_cli, tmp_path, argv):
    (tmp_path / "f.png").write_bytes(b"mine")
    rc, _, err = run_cli("machines", "run", "bb2", *[a.format(d=tmp_path) for a in argv])
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "f.png").read_bytes() == b"mine" and not (tmp_path / "n.png").exists()
