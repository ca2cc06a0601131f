import json
import os

import pytest

from attnlab.core.atomic import append_jsonl, atomic_path, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_file(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "old")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]  # no temp files left


def test_crash_mid_write_keeps_old_file(tmp_path):
    p = tmp_path / "model.json"
    atomic_write_json(p, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text('{"version": 2, "trunc')  # half written ...
            raise RuntimeError("power cut")  # ... and the writer dies
    assert json.loads(p.read_text()) == {"version": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["model.json"]


def test_crash_of_a_real_process_mid_write_keeps_old_file(tmp_path):
    """A process killed (os._exit) inside the writer leaves the old file intact."""
    import subprocess
    import sys

    p = tmp_path / "state.json"
    atomic_write_json(p, {"step": 1})
    code = ("import os, sys; from attnlab.core.atomic import atomic_path\n"
            f"with atomic_path({str(p)!r}) as tmp:\n"
            "    tmp.write_text('{\"step\": 2')\n"
            "    os._exit(9)\n")
    rc = subprocess.run([sys.executable, "-c", code]).returncode
    assert rc == 9
    assert json.loads(p.read_text()) == {"step": 1}


def test_atomic_path_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        assert tmp.suffix == ".safetensors"
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "w.safetensors").read_bytes() == b"x"


def test_jsonl_skips_torn_line_and_appends_cleanly(tmp_path):
    p = tmp_path / "log.jsonl"
    append_jsonl(p, {"i": 0})
    with open(p, "a") as f:
        f.write('{"i": 1, "tor')  # a crash mid-line
    append_jsonl(p, {"i": 2})
    assert read_jsonl(p) == [{"i": 0}, {"i": 2}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_json_handles_numpy_and_torch(tmp_path):
    import numpy as np
    import torch

    p = atomic_write_json(tmp_path / "x.json", {"a": np.float64(1.5), "b": np.arange(3), "c": torch.tensor(2)})
    assert json.loads(p.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": 2}
    assert os.path.getsize(p) > 0


def test_atomic_file_gets_the_mode_a_plain_open_would(tmp_path):
    import os
    import stat

    from attnlab.core.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic = atomic_write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
