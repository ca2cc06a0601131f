"""Bad invocations of ``attnlab depth``: each is exit code 2 with one line on stderr, before any model is
built, and leaves every file that was there byte-identical."""

import os
from pathlib import Path

import pytest

from attnlab.cli import main
from attnlab.depth import sweep

TINY = ("budgets: [3000]\ndepths: [1, 2]\nseeds: [0]\ntokens: 192\nbatch_size: 4\nseq_len: 16\nhead_dim: 8\n"
        "eval_tokens: 256\ntolerance: 0.2\nwarmup_steps: 1\n")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace: a tiny sweep config, a stray file, a non-empty foreign folder; training is forbidden."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "file.txt").write_text("keep me")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("my notes")
    monkeypatch.setattr(sweep, "train_one", lambda job, config: pytest.fail("a model was built"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


CASES = {
    "plan into a non-empty folder": lambda ws: ["plan", "--params", "1e9", "-o", "mine"],
    "plan into a file": lambda ws: ["plan", "--params", "1e9", "-o", "file.txt"],
    "plan below a file": lambda ws: ["plan", "--params", "1e9", "-o", "file.txt/plan"],
    "plan with a bad size": lambda ws: ["plan", "--params", "1.3X"],
    "plan with an infinite size": lambda ws: ["plan", "--params", "inf"],
    "rank with heads not dividing": lambda ws: ["rank", "--depths", "1", "--widths", "2", "--heads", "1", "3"],
    "sweep without its config": lambda ws: ["sweep", "no-such.yaml", "-o", "runs/s"],
    "sweep with a boolean depth": lambda ws: ["sweep", _write(ws, "depths: [1, 2]", "depths: [true]"), "-o", "runs/s"],
    "sweep with a negative lr": lambda ws: ["sweep", _write(ws, "lr: 0.003", "lr: -1"), "-o", "runs/s"],
    "sweep with negative warmup": lambda ws: ["sweep", _write(ws, "warmup_steps: 1", "warmup_steps: -5"),
                                              "-o", "runs/s"],
    "sweep with malformed YAML": lambda ws: ["sweep", _write(ws, "budgets: [3000]", "budgets: [3000"), "-o", "runs/s"],
    "sweep with a missing text file": lambda ws: ["sweep", _write(ws, "seeds: [0]", "text: no.txt"), "-o", "runs/s"],
    "sweep with a text shorter than a window": lambda ws: ["sweep", _write(ws, "seeds: [0]", "text: file.txt"),
                                                           "-o", "runs/s"],
    "sweep with a repeated depth": lambda ws: ["sweep", _write(ws, "depths: [1, 2]", "depths: [2, 2]"),
                                               "-o", "runs/s"],
    "sweep with warmup past the end": lambda ws: ["sweep", _write(ws, "warmup_steps: 1", "warmup_steps: 3"),
                                                  "-o", "runs/s"],
    "sweep with a bad grammar": lambda ws: ["sweep", _write(ws, "seeds: [0]", "source: hmm\nhmm: {vocab: 1}"),
                                            "-o", "runs/s"],
    "sweep with a grammar for text": lambda ws: ["sweep", _write(ws, "seeds: [0]", "hmm: {vocab: 64}"),
                                                 "-o", "runs/s"],
    "sweep with tokens and tokens_per_param": lambda ws: ["sweep", _write(ws, "seeds: [0]", "tokens_per_param: 10"),
                                                          "-o", "runs/s"],
    "sweep with warmup past a model": lambda ws: ["sweep", _write(ws, "tokens: 192", "tokens_per_param: 0.01"),
                                                  "-o", "runs/s"],
    "sweep with a boolean lr_base_width": lambda ws: ["sweep", _write(ws, "seeds: [0]", "lr_base_width: true"),
                                                      "-o", "runs/s"],
    "sweep into a foreign folder": lambda ws: ["sweep", "tiny.yaml", "-o", "mine"],
    "sweep with a Ray address but no Ray": lambda ws: ["sweep", "tiny.yaml", "-o", "runs/s", "--ray-address", "auto"],
    "sweep with no workers": lambda ws: ["sweep", "tiny.yaml", "-o", "runs/s", "--workers", "0"],
    "sweep with an unknown backend": lambda ws: ["sweep", "tiny.yaml", "-o", "runs/s", "--backend", "slurm"],
    "sweep into a file": lambda ws: ["sweep", "tiny.yaml", "-o", "file.txt"],
    "count of a file that is not JSON": lambda ws: ["count", "file.txt"],
    "count of a config of an unsupported model": lambda ws: ["count", _config(ws, '{"model_type": "mixtral"}')],
    "count of a config that is a list": lambda ws: ["count", _config(ws, "[1, 2]")],
    "count into a non-empty folder": lambda ws: ["count", "gpt-2", "-o", "mine"],
    "plot of a file": lambda ws: ["plot", "file.txt"],
    "plot of results that are not a sweep's": lambda ws: ["plot", _results(ws, '{"key": "x"}\n')],
    "plot of binary results": lambda ws: ["plot", _results(ws, b"\xff\xfe\x00")],
}


def _write(ws: Path, old: str, new: str) -> str:
    """The tiny config with one line changed, as bad.yaml."""
    assert old in TINY + "lr: 0.003\n"
    (ws / "bad.yaml").write_text((TINY + "lr: 0.003\n").replace(old, new))
    return "bad.yaml"


def _config(ws: Path, text: str) -> str:
    (ws / "config.json").write_text(text)
    return "config.json"


def _results(ws: Path, content: str | bytes) -> str:
    (ws / "res").mkdir(exist_ok=True)
    path = ws / "res" / sweep.RESULTS
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return "res"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_invocation_is_one_line_and_loses_nothing(ws, capsys, case):
    argv = CASES[case](ws)
    before = snapshot(ws)
    rc = main(["depth", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err, err
    assert snapshot(ws) == before  # nothing written, nothing changed
    assert not (ws / "runs").exists()


def test_an_existing_output_names_overwrite(ws, capsys):
    assert main(["depth", "plan", "--params", "1e9", "-o", "mine"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_output(ws, capsys):
    (ws / "ro").mkdir(mode=0o500)
    assert main(["depth", "rank", "--depths", "1", "--widths", "2", "-o", "ro/rank"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_sweep_resumes_refuses_another_recipe_and_overwrites(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(TINY)
    (tmp_path / "b.yaml").write_text(TINY.replace("warmup_steps: 1", "warmup_steps: 2"))
    out = str(tmp_path / "s")
    assert main(["depth", "sweep", str(tmp_path / "a.yaml"), "-o", out, "--limit", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["depth", "sweep", str(tmp_path / "a.yaml"), "-o", out, "--limit", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resuming the depth sweep" in err
    assert len(sweep.results_log(out).results()) == 2
    before = snapshot(Path(out))
    assert main(["depth", "sweep", str(tmp_path / "b.yaml"), "-o", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and snapshot(Path(out)) == before
    assert main(["depth", "sweep", str(tmp_path / "b.yaml"), "-o", out, "--limit", "1", "--overwrite"]) == 0
    assert list(sweep.results_log(out).results()) == ["N3000-L1-s0"]  # started afresh


def test_plan_and_plot_overwrite(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["depth", "plan", "--params", "1e9", "-o", str(out)]) == 0
    assert main(["depth", "plan", "--params", "2e9", "-o", str(out)]) == 2
    assert main(["depth", "plan", "--params", "2e9", "-o", str(out), "--overwrite"]) == 0
    assert "2e9" in (out / "record.json").read_text()
