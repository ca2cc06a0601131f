"""Bad invocations of `attnlab nbl`: each exits 2 with one line on stderr and leaves every existing file as it
was; `--overwrite` replaces an output whole, and a resumable run says that it resumes."""

import json
import os
from pathlib import Path

import pytest

from attnlab.cli import main

CAL = ["--tokens", "256", "--seq-len", "32", "--batch-size", "4"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with what users already have: a model folder, a file, a junk statistics file."""
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "model.safetensors").write_bytes(b"a user's model")
    (tmp_path / "file.txt").write_text("a user's file\n")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    (tmp_path / "broken" / "nbl.json").write_text("{not json")
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "cache" not in p.parts}


def _fails_in_one_line(capsys, argv: list[str]) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["apply", "{ckpt}", "--layers", "1", "-o", "{tmp}/existing"], "pass --overwrite"),
    (["apply", "{ckpt}", "--layers", "1", "-o", "{tmp}/file.txt"], "is a file, not a folder"),
    (["apply", "{ckpt}", "--layers", "1", "-o", "{tmp}/file.txt/sub"], "is a file, not a folder"),
    (["apply", "{ckpt}", "--layers", "1", "--ridge", "nan", "-o", "{tmp}/new"], "expected a finite number >= 0"),
    (["apply", "{ckpt}", "--layers", "1", "--ridge", "-1", "-o", "{tmp}/new"], "expected a finite number >= 0"),
    (["apply", "{ckpt}", "--layers", "9", "-o", "{tmp}/new"], "cannot replace 9 layers"),
    (["compare", "{ckpt}", "--layers", "1", "--configs", "nbl/cca", "--tokens", "64", "--seq-len", "32"],
     "give at least 128 (--tokens 128)"),
    (["collect", "{ckpt}", "-o", "{tmp}/junk.safetensors"], "is not a statistics folder"),
    (["collect", "{ckpt}", "-o", "{tmp}/existing"], "is not a statistics folder"),
    (["rank", "no/such/model", "-o", "{tmp}/existing"], "pass --overwrite"),  # checked before the model loads
    (["rank", "{ckpt}", "--stats", "{tmp}/junk.safetensors"], "not an attnlab NBL statistics folder (a file)"),
    (["compare", "{ckpt}", "--layers", "1", "--configs", "nbl/magic"], "expected METHOD/SELECTOR"),
    (["compare", "{ckpt}", "--layers", "1", "2", "1", "--configs", "nbl/cca"], "--layers: 1 given more than once"),
    (["compare", "{ckpt}", "--layers", "1", "--configs", "nbl/cca", "--ray-address", "auto"], "needs --backend ray"),
    (["eval", "{tmp}/broken", "--against", "{ckpt}", "-o", "{tmp}/new"], "not valid JSON"),
    (["eval", "{ckpt}", "--against", "{ckpt}", "-o", "{tmp}/existing"], "pass --overwrite"),
    (["bench", "{ckpt}", "--against", "{ckpt}", "-o", "{tmp}/file.txt"], "is a file, not a folder"),
])
def test_bad_invocation_is_one_line_and_loses_nothing(argv, message, tiny_checkpoint, work, capsys):
    before = _snapshot(work)
    argv = [a.format(ckpt=tiny_checkpoint, tmp=work) for a in argv]
    line = _fails_in_one_line(capsys, ["nbl", *argv, *(CAL if argv[0] in ("apply", "collect", "rank") else [])])
    assert message in line and "Traceback" not in line
    assert _snapshot(work) == before
    assert not (work / "new").exists()
    assert not [p for p in work.iterdir() if p.name.endswith(".partial")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_output_is_one_line(tiny_checkpoint, work, capsys):
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = _fails_in_one_line(capsys, ["nbl", "apply", tiny_checkpoint, "--layers", "1", *CAL,
                                           "-o", locked / "out"])
    finally:
        locked.chmod(0o700)
    assert "not writable" in line and not any(locked.iterdir())


def test_overwrite_replaces_a_model_folder_whole(tiny_checkpoint, work, capsys):
    out = work / "model"
    assert main(["nbl", "apply", str(tiny_checkpoint), "--layers", "2", *CAL, "-o", str(out)]) == 0
    (out / "stale.bin").write_bytes(b"left over")
    line = _fails_in_one_line(capsys, ["nbl", "apply", tiny_checkpoint, "--layers", "1", *CAL, "-o", out])
    assert "pass --overwrite" in line and json.loads((out / "nbl.json").read_text())["layers"].__len__() == 2
    assert main(["nbl", "apply", str(tiny_checkpoint), "--layers", "1", *CAL, "-o", str(out), "--overwrite"]) == 0
    assert len(json.loads((out / "nbl.json").read_text())["layers"]) == 1
    assert not (out / "stale.bin").exists()
    record = json.loads((out / "record.json").read_text())
    assert record["command"].startswith("attnlab nbl apply ") and "--layers 1" in record["command"]


def test_a_partial_statistics_file_resumes_and_says_so(tiny_checkpoint, work, capsys):
    import torch

    from attnlab.nbl.session import Session
    from attnlab.nbl.stats import Stats, collect

    session = Session.open(str(tiny_checkpoint))
    blocks, info = session.blocks("builtin", "calibration", 256, 32)
    partial = collect(session.model, blocks[:4], batch_size=4, progress=False, meta={"calibration": info})
    partial.meta["n_batches"] = 2  # the first of two batches: what an interrupted `collect` leaves
    path = work / "stats"
    partial.save(path)
    assert main(["nbl", "collect", str(tiny_checkpoint), *CAL, "-o", str(path)]) == 0
    err = capsys.readouterr().err
    assert "resuming the statistics" in err and len(err.strip().splitlines()) == 1
    resumed, whole = Stats.load(path), collect(session.model, blocks, batch_size=4, progress=False)
    assert resumed.complete and resumed.tokens == whole.tokens == 256
    torch.testing.assert_close(resumed.layers[0].m2_xx, whole.layers[0].m2_xx, rtol=1e-12, atol=1e-12)


def test_a_compare_run_resumes_and_says_so(tiny_checkpoint, work, capsys):
    argv = ["nbl", "compare", str(tiny_checkpoint), "--layers", "1", "--configs", "nbl/cca", "drop/cosine",
            "--heldout-tokens", "64", *CAL, "-o", str(work / "run")]
    assert main(argv) == 0
    assert (work / "run" / "record.json").exists() and (work / "run" / "nbl_perplexity.png").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming the nbl compare" in capsys.readouterr().err
    line = _fails_in_one_line(capsys, [*argv[:-2], "--heldout-tokens", "32", "-o", work / "run"])
    assert "holds another" in line
