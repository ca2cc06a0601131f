"""Outputs never lose a file: refuse, overwrite whole, resume, and name the user's path on OS errors."""

import os
from pathlib import Path

import pytest

from attnlab.core.atomic import atomic_write_text
from attnlab.core.errors import AttnlabError
from attnlab.core.outputs import MARKER, artifact_dir, output_file, run_dir


def test_artifact_dir_is_swapped_in_whole(tmp_path):
    out = tmp_path / "model"
    with artifact_dir(out, what="model") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "stale.png").write_text("old")
    assert (out / "a.txt").read_text() == "1" and (out / MARKER).is_file()
    with pytest.raises(AttnlabError, match="--overwrite"):
        with artifact_dir(out):
            pass
    with artifact_dir(out, overwrite=True, what="model") as tmp:
        (tmp / "a.txt").write_text("2")
    assert (out / "a.txt").read_text() == "2" and not (out / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind


def test_artifact_dir_keeps_the_old_folder_when_writing_fails(tmp_path):
    out = tmp_path / "model"
    with artifact_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ZeroDivisionError):
        with artifact_dir(out, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("half")
            1 / 0
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_overwrite_only_replaces_attnlab_folders(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(AttnlabError, match="not written by attnlab"):
        with artifact_dir(mine, overwrite=True):
            pass
    assert (mine / "thesis.tex").read_text() == "precious"


def test_overwrite_only_replaces_an_output_of_the_same_kind(tmp_path):
    data = tmp_path / "data"
    with artifact_dir(data, what="dataset") as tmp:
        (tmp / "train.json").write_text("{}")
    with pytest.raises(AttnlabError, match="holds a dataset, not a training run"):
        run_dir(data, {}, what="training run", overwrite=True)
    with pytest.raises(AttnlabError, match="holds a dataset, not a model"):
        with artifact_dir(data, what="model", overwrite=True):
            pass
    assert (data / "train.json").exists()


def _write(kind: str, target: Path) -> None:
    """Write an output of ``kind`` at ``target`` through the outputs API."""
    if kind == "artifact":
        with artifact_dir(target):
            pass
    elif kind == "run":
        run_dir(target, {})
    else:
        atomic_write_text(output_file(target / "f.json"), "1")


@pytest.mark.parametrize("kind", ["artifact", "run", "file"])
def test_a_file_in_the_way_is_one_line(tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(AttnlabError) as e:
        _write(kind, blocker if kind == "artifact" else blocker / "sub")
    assert "is a file" in str(e.value) and "\n" not in str(e.value)
    assert blocker.read_text() == "x"


def test_run_dir_resumes_the_same_config_and_refuses_another(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert run_dir(out, {"a": 1}, what="sweep") == (out, False)
    (out / "log.jsonl").write_text("{}\n")
    assert run_dir(out, {"a": 1}, what="sweep") == (out, True)
    assert "resuming the sweep in" in capsys.readouterr().err
    with pytest.raises(AttnlabError, match="another sweep"):
        run_dir(out, {"a": 2}, what="sweep")
    assert run_dir(out, {"a": 2}, what="sweep", overwrite=True) == (out, False)
    assert not (out / "log.jsonl").exists()


def test_run_dir_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(AttnlabError, match="--overwrite"):
        run_dir(tmp_path, {})


def test_output_file(tmp_path):
    f = tmp_path / "r.json"
    assert output_file(f) == f
    f.write_text("1")
    with pytest.raises(AttnlabError, match="--overwrite"):
        output_file(f)
    assert output_file(f, overwrite=True) == f
    with pytest.raises(AttnlabError, match="is a folder"):
        output_file(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_folder_names_the_users_path(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(AttnlabError, match="not writable"):
            output_file(ro / "x.json")
        with pytest.raises(AttnlabError) as e:
            atomic_write_text(ro / "x.json", "1")
        assert str(ro / "x.json") in str(e.value) and ".x.json." not in str(e.value)
    finally:
        ro.chmod(0o700)


def test_atomic_write_names_the_users_path_not_the_temporary_one(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(AttnlabError) as e:
        atomic_write_text(tmp_path / "d", "into a folder")  # os.replace of a file onto a folder fails
    assert str(tmp_path / "d") in str(e.value) and ".partial" not in str(e.value) and ".d." not in str(e.value)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs, where mkdir fails even for root")
@pytest.mark.parametrize("kind", ["artifact", "run", "file"])
def test_an_unwritable_place_is_one_line_for_root_too(kind):
    with pytest.raises(AttnlabError) as e:
        _write(kind, Path("/sys/attnlab-test/out"))
    assert str(e.value).startswith("cannot write /sys/attnlab-test/out") and "\n" not in str(e.value)


def test_run_dir_started_by_many_processes_at_once_starts_one_run(tmp_path, monkeypatch):
    """A job array starts every task on one new folder: the one whose folder lands starts the run, the others
    resume it, even when another task creates the folder between this one's check and its own creation."""
    import tempfile

    import attnlab.core.outputs as outputs

    out, real_mkdtemp = tmp_path / "sweep", tempfile.mkdtemp

    def other_task_first(*args, **kwargs):  # the other task wins the race at the last moment
        monkeypatch.setattr(outputs.tempfile, "mkdtemp", real_mkdtemp)
        assert run_dir(out, {"a": 1}, what="sweep") == (out, False)
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", other_task_first)
    assert run_dir(out, {"a": 1}, what="sweep") == (out, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no temporary folder left behind
    assert [p.name for p in out.iterdir()] == [MARKER]

    from concurrent.futures import ThreadPoolExecutor

    many = tmp_path / "array"
    with ThreadPoolExecutor(8) as pool:
        started = list(pool.map(lambda _: run_dir(many, {"a": 1}, what="sweep", quiet=True)[1], range(32)))
    assert started.count(False) == 1 and started.count(True) == 31


def test_run_dir_takes_an_empty_folder_and_refuses_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_dir(tmp_path / "empty", {}, what="sweep") == (tmp_path / "empty", False)
    (tmp_path / "f").write_text("x")
    with pytest.raises(AttnlabError, match="is a file"):
        run_dir(tmp_path / "f", {}, what="sweep")
