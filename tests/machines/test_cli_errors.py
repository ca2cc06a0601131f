"""Bad invocations of `attnlab machines`: each exits 2 with one line on stderr and leaves every file as it was."""

import json
import os
from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def files(tmp_path):
    """A folder of things a user might point the CLI at by mistake."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("my results\n")
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\ntransitions: {}\n".encode("latin-1"))
    (tmp_path / "bad.yaml").write_text('transitions:\n  A: {"0": ["1", UP, A]}\n')
    (tmp_path / "badinput.yaml").write_text('input: "012"\ntransitions:\n  A: {"0": ["1", R, A]}\n')
    rows = ", ".join(f'"{chr(0x100 + i)}": ["_", R, B]' for i in range(300))  # 300 symbols: ~10^6 GiB to build
    (tmp_path / "huge.yaml").write_text(f"transitions:\n  A: {{{rows}}}\n")
    (tmp_path / "trace.jsonl").write_text("not json\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    yield tmp_path
    locked.chmod(0o700)


CASES = {
    "compile into a non-empty folder": ["compile", "bb4", "-o", "{d}/results"],
    "compile --overwrite of a folder attnlab did not write": ["compile", "bb4", "-o", "{d}/results", "--overwrite"],
    "compile onto a file": ["compile", "bb4", "-o", "{d}/notes.txt"],
    "compile below a file": ["compile", "bb4", "-o", "{d}/notes.txt/bb4"],
    "compile into a read-only folder": ["compile", "bb4", "-o", "{d}/locked/bb4"],
    "compile where even root cannot write": ["compile", "bb4", "-o", "/sys/attnlab-test/bb4"],
    "run into a non-empty folder": ["run", "bb4", "-o", "{d}/results"],
    "run below a file": ["run", "bb4", "-o", "{d}/notes.txt/run"],
    "certify onto a file": ["certify", "bb4", "-o", "{d}/notes.txt"],
    "unknown machine": ["run", "nosuch"],
    "missing machine file": ["run", "{d}/missing.yaml"],
    "machine file not UTF-8": ["run", "{d}/latin1.yaml"],
    "malformed machine file": ["run", "{d}/bad.yaml"],
    "input outside the alphabet": ["run", "binc", "--input", "12"],
    "unknown executor": ["run", "bb4", "--executor", "gpu"],
    "window zero": ["compile", "bb4", "--window", "0", "-o", "{d}/new"],
    "compile under /dev/null": ["compile", "bb4", "-o", "/dev/null/x"],
    "compile with a window too small": ["compile", "bb4", "--window", "10", "-o", "{d}/new"],
    "export with a window too small": ["export", "bb4", "--window", "12", "--format", "onnx", "-o", "{d}/new"],
    "export an unknown format": ["export", "bb4", "--format", "gguf", "-o", "{d}/new"],
    "YAML input outside the alphabet": ["run", "{d}/badinput.yaml"],
    "machine too large": ["compile", "{d}/huge.yaml", "-o", "{d}/new"],
    "trace onto an existing file": ["run", "bb4", "--trace", "{d}/notes.txt"],
    "trace under a file": ["run", "bb4", "--trace", "{d}/notes.txt/t.jsonl"],
    "trace of the reference interpreter": ["run", "bb4", "--executor", "reference", "--trace", "{d}/new.jsonl"],
    "replay a folder that is not an export": ["replay", "{d}/results"],
    "replay a malformed trace": ["replay", "{d}/results", "--trace", "{d}/trace.jsonl"],
}


@pytest.mark.parametrize("case", CASES)
def test_bad_invocation_exit_2_one_line_nothing_lost(run_cli, files, case):
    if "read-only" in case and os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    if "even root" in case and not os.path.isdir("/sys/kernel"):
        pytest.skip("needs Linux sysfs for a place unwritable even by root")
    before = snapshot(files)
    rc, out, err = run_cli("machines", *[a.format(d=files) for a in CASES[case]])
    assert rc == 2, err
    assert err.count("\n") == 1 and "internal error" not in err and ".partial" not in err, err
    assert snapshot(files) == before
    assert not (files / "new").exists() and out == ""
    if "non-empty" in case:
        assert "--overwrite" in err
    if "too large" in case:
        assert "GiB" in err and "parameters" in err


def test_overwrite_replaces_an_attnlab_folder_whole(run_cli, tmp_path):
    out = tmp_path / "m"
    assert run_cli("machines", "compile", "bb4", "-o", out)[0] == 0
    (out / "stale.txt").write_text("left from an old run\n")
    rc, _, err = run_cli("machines", "compile", "bb2", "-o", out)
    assert rc == 2 and "--overwrite" in err and (out / "stale.txt").exists()
    rc, _, _ = run_cli("machines", "compile", "bb2", "-o", out, "--overwrite", "--json")
    assert rc == 0 and not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["machine"] == "bb2"
    assert {p.name for p in out.iterdir()} == {".attnlab.json", "config.json", "model.safetensors", "record.json"}
