"""Bad invocations of ``attnlab memorize``: each is exit code 2 with one line on stderr, before any prompt is
fitted, and leaves every file that was there byte-identical. Then the good neighbours: a resumed sweep says
so in one line, and --overwrite replaces."""

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from attnlab.cli import main
from attnlab.memorize import peft_adapter, search
from attnlab.memorize.sweep import LOG, run_sweep

#: One point, one probe of one step: a sweep folder in milliseconds.
FAST = {"base": {"n_pairs": 4, "seq_len": 2, "vocab": 8, "n_classes": 4, "d_model": 8, "n_heads": 2, "n_layers": 1,
                 "d_ff": 8, "max_steps": 1, "m_max": 1, "restarts": 1},
        "experiments": {"n_pairs": {"n_pairs": [4]}}}
SEARCH = ["search", "--n-pairs", "4", "--seq-len", "2", "--vocab", "8", "--n-classes", "4", "--d-model", "8",
          "--n-heads", "2", "--n-layers", "1", "--d-ff", "8", "--max-steps", "1", "--m-max", "1", "--restarts", "1"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _yaml(ws: Path, name: str, config) -> str:
    (ws / name).write_text(yaml.safe_dump(config))
    return name


def _with(ws: Path, **fields) -> str:
    return _yaml(ws, "bad.yaml", {**FAST, **fields})


def _with_base(ws: Path, **changes) -> str:
    return _yaml(ws, "bad.yaml", {**FAST, "base": {**FAST["base"], **changes}})


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A workspace: a finished one-probe sweep, a stray file, a non-empty foreign folder, a fast config."""
    _yaml(tmp_path, "fast.yaml", FAST)
    run_sweep(FAST, tmp_path / "sweep", progress=False)
    (tmp_path / "file.txt").write_text("keep me")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("my notes")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ws(workspace, monkeypatch):
    """The workspace, where fitting a prompt fails the test: bad input must be refused before any work."""
    monkeypatch.setattr(search, "fit_prompts", lambda *a, **k: pytest.fail("a prompt was fitted"))
    monkeypatch.setattr(peft_adapter, "fit_peft_prompt", lambda *a, **k: pytest.fail("a prompt was fitted"))
    return workspace


CASES = {
    "search into a non-empty folder": lambda ws: [*SEARCH, "-o", "mine"],
    "search into a file": lambda ws: [*SEARCH, "-o", "file.txt"],
    "search below a file": lambda ws: [*SEARCH, "-o", "file.txt/run"],
    "search with an infinite lr": lambda ws: [*SEARCH, "--lr", "inf"],
    "search with no restarts": lambda ws: [*SEARCH, "--restarts", "0"],
    "search with generation steps and every target": lambda ws: [*SEARCH, "--target", "every", "--gen-steps", "1"],
    "search with an unknown init": lambda ws: [*SEARCH, "--init", "xavier"],
    "peft with an unknown method": lambda ws: ["peft", "--method", "lora"],
    "peft into a file": lambda ws: ["peft", "--n-pairs", "4", "--seq-len", "2", "-o", "file.txt"],
    "sweep without its config": lambda ws: ["sweep", "no-such.yaml", "-o", "runs/s"],
    "sweep with no restarts": lambda ws: ["sweep", _with_base(ws, restarts=0), "-o", "runs/s"],
    "sweep with an infinite lr": lambda ws: ["sweep", _with_base(ws, lr=float("inf")), "-o", "runs/s"],
    "sweep with a boolean n_pairs": lambda ws: ["sweep", _with_base(ws, n_pairs=True), "-o", "runs/s"],
    "sweep with a list as base": lambda ws: ["sweep", _yaml(ws, "bad.yaml", {**FAST, "base": [1, 2]}), "-o", "runs/s"],
    "sweep with a number as variants": lambda ws: ["sweep", _yaml(ws, "bad.yaml", {
        **FAST, "experiments": {"init": {"variants": 3}}}), "-o", "runs/s"],
    "sweep with a boolean restarts": lambda ws: ["sweep", _with_base(ws, restarts=True), "-o", "runs/s"],
    "sweep with an empty list as base": lambda ws: ["sweep", _with(ws, base=[]), "-o", "runs/s"],
    "sweep with a boolean seed": lambda ws: ["sweep", _with(ws, seeds=[True]), "-o", "runs/s"],
    "sweep with a seed twice": lambda ws: ["sweep", _with(ws, seeds=[0, 0]), "-o", "runs/s"],
    "sweep with a number as name": lambda ws: ["sweep", _with(ws, name=3), "-o", "runs/s"],
    "sweep with a number as experiment name": lambda ws: ["sweep", _yaml(ws, "bad.yaml", {
        **FAST, "experiments": {3: {"n_pairs": [4]}}}), "-o", "runs/s"],
    "sweep with an empty grid": lambda ws: ["sweep", _yaml(ws, "bad.yaml", {
        **FAST, "experiments": {"n_pairs": {"n_pairs": []}}}), "-o", "runs/s"],
    "sweep with no variants": lambda ws: ["sweep", _yaml(ws, "bad.yaml", {
        **FAST, "experiments": {"init": {"variants": []}}}), "-o", "runs/s"],
    "sweep with a seed in an experiment": lambda ws: ["sweep", _yaml(ws, "bad.yaml", {
        **FAST, "experiments": {"s": {"seed": [1, 2]}}}), "-o", "runs/s"],
    "sweep with an unknown backbone draw": lambda ws: ["sweep", _with_base(ws, backbone_draw="v2"), "-o", "runs/s"],
    "sweep with a boolean data seed": lambda ws: ["sweep", _with_base(ws, data_seed=False), "-o", "runs/s"],
    "search with a zero lr": lambda ws: [*SEARCH, "--lr", "0"],
    "search with a negative backbone seed": lambda ws: [*SEARCH, "--backbone-seed", "-1"],
    "peft with an infinite lr": lambda ws: ["peft", "--n-pairs", "4", "--seq-len", "2", "--lr", "inf"],
    "sweep with malformed YAML": lambda ws: ["sweep", _text(ws, "base: [1"), "-o", "runs/s"],
    "sweep of another config into a sweep folder": lambda ws: ["sweep", _with_base(ws, max_steps=2), "-o", "sweep"],
    "sweep into a foreign folder": lambda ws: ["sweep", "fast.yaml", "-o", "mine"],
    "sweep into a file": lambda ws: ["sweep", "fast.yaml", "-o", "file.txt"],
    "plot of a missing folder": lambda ws: ["plot", "no-such-folder"],
    "plot of a file": lambda ws: ["plot", "file.txt"],
    "plot of a binary log": lambda ws: ["plot", _sweep_copy(ws, b"\xff\xfe\x00")],
}


def _text(ws: Path, text: str) -> str:
    (ws / "bad.yaml").write_text(text)
    return "bad.yaml"


def _sweep_copy(ws: Path, log: bytes) -> str:
    (ws / "copy").mkdir()
    (ws / "copy" / "config.yaml").write_bytes((ws / "sweep" / "config.yaml").read_bytes())
    (ws / "copy" / LOG).write_bytes(log)
    return "copy"


@pytest.mark.parametrize("case", CASES)
def test_bad_invocation_is_exit_2_with_one_line_and_loses_nothing(ws, capsys, case):
    argv = CASES[case](ws)
    before = snapshot(ws)
    assert main(["memorize", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("attnlab"), err
    assert snapshot(ws) == before
    assert not (ws / "runs").exists()


def test_unwritable_output_is_exit_2(ws, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    (ws / "locked").mkdir()
    (ws / "locked").chmod(0o500)
    try:
        for argv in ([*SEARCH, "-o", "locked/run"], ["sweep", "fast.yaml", "-o", "locked/sweep"]):
            assert main(["memorize", *argv]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "not writable" in err
    finally:
        (ws / "locked").chmod(0o700)


def test_the_same_sweep_resumes_in_one_line_and_overwrite_replaces(workspace, capsys):
    ws = workspace
    log = (ws / "sweep" / LOG).read_bytes()
    assert main(["memorize", "sweep", "fast.yaml", "-o", "sweep", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "attnlab: resuming the memorize sweep in sweep"
    assert json.loads(captured.out)["points"] == 1 and (ws / "sweep" / "record.json").is_file()
    assert (ws / "sweep" / LOG).read_bytes() == log  # nothing rerun
    other = _with_base(ws, max_steps=2, m_max=2)
    assert main(["memorize", "sweep", other, "-o", "sweep", "--overwrite", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert yaml.safe_load((ws / "sweep" / "config.yaml").read_text())["base"]["max_steps"] == 2
    assert {json.loads(line)["point"] for line in (ws / "sweep" / LOG).read_text().splitlines()} != \
        {json.loads(line)["point"] for line in log.decode().splitlines()}  # the old log is gone, not appended to


def test_search_record_and_overwrite(workspace, capsys):
    assert main(["memorize", *SEARCH, "-o", "runs/search", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    record = json.loads((workspace / "runs" / "search" / "record.json").read_text())
    assert out["record"] == str(Path("runs/search/record.json"))
    assert record["metrics"]["n_probes"] == len(out["probes"])
    argv = shlex.split(record["command"])
    assert argv[:5] == ["attnlab", "memorize", "search", "--n-pairs", "4"] and argv.count("--seed") == 1
    assert main(argv[1:] + ["--json"]) == 0  # the record's command reproduces the search (same process, same bits)

    def outcome(probes):
        return [(p["m"], p["restart"], p["memorized"], p["steps"], p["loss"]) for p in probes]

    assert outcome(json.loads(capsys.readouterr().out)["probes"]) == outcome(out["probes"])
    assert main(["memorize", *SEARCH, "-o", "runs/search"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["memorize", *SEARCH, "--seed", "1", "-o", "runs/search", "--overwrite"]) == 0
    assert json.loads((workspace / "runs" / "search" / "record.json").read_text())["seed"] == 1
