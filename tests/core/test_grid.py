"""The grid runner: resume after an interruption, job claiming across processes, stale claims, corrupted
logs, threads in every worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnlab.core.errors import AttnlabError
from attnlab.core.grid import NUMBER, GridLog, Job, field_problem, run_grid

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # grid_jobs, importable in spawned workers too (they inherit sys.path)
import grid_jobs  # noqa: E402


def _jobs(tmp_path: Path, n: int, **extra) -> list[Job]:
    return [Job(f"x{i}", {"x": i, "runs": str(tmp_path / "runs.txt"), **extra}) for i in range(n)]


def _log(folder: Path) -> GridLog:
    return GridLog(folder / "rows.jsonl", "test grid", fields={"x": int, "y": NUMBER})


def _runs(tmp_path: Path) -> list[int]:
    path = tmp_path / "runs.txt"
    return [int(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def test_interrupted_grid_resumes_without_rerunning(tmp_path):
    log = _log(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid_jobs.square, _jobs(tmp_path, 5, fail=3, interrupt=True), log, progress=False)
    assert sorted(log.results()) == ["x0", "x1", "x2"]
    assert not list((tmp_path / "run" / "claims").iterdir())  # claims released on the way out
    rows = run_grid(grid_jobs.square, _jobs(tmp_path, 5), log, progress=False)
    assert sorted(rows) == [f"x{i}" for i in range(5)] and rows["x4"]["y"] == 16
    assert sorted(_runs(tmp_path)) == list(range(5))  # each job ran exactly once over both invocations


def test_worker_error_propagates_and_releases_claims(tmp_path):
    log = _log(tmp_path / "run")
    with pytest.raises(RuntimeError, match="job 1 failed"):
        run_grid(grid_jobs.square, _jobs(tmp_path, 4, fail=1), log, workers=2, progress=False)
    assert not list((tmp_path / "run" / "claims").iterdir())
    assert "x1" not in log.results()


def test_a_worker_that_dies_is_an_error_naming_its_job_not_a_hang(tmp_path):
    log = _log(tmp_path / "run")
    with pytest.raises(RuntimeError, match=r"the worker running job x2 died \(exit code 9\)"):
        run_grid(grid_jobs.die, _jobs(tmp_path, 4, fail=2), log, workers=2, progress=False)
    assert not list((tmp_path / "run" / "claims").iterdir())
    assert "x2" not in log.results()


def test_threads_are_honoured_in_process_and_in_every_worker(tmp_path):
    import torch

    before = torch.get_num_threads()
    rows = run_grid(grid_jobs.square, _jobs(tmp_path, 2), _log(tmp_path / "a"), threads=3, progress=False)
    assert {r["threads"] for r in rows.values()} == {3}
    assert torch.get_num_threads() == before  # the caller's count again
    rows = run_grid(grid_jobs.square, _jobs(tmp_path, 4), _log(tmp_path / "b"), workers=2, threads=2,
                    progress=False)
    assert {r["threads"] for r in rows.values()} == {2}
    assert os.getpid() not in {r["pid"] for r in rows.values()}


_PROCESS = """
import sys
sys.path.insert(0, {here!r})
import grid_jobs
from attnlab.core.grid import GridLog, Job, NUMBER, run_grid
from pathlib import Path
jobs = [Job(f"x{{i}}", {{"x": i, "runs": {runs!r}, "sleep": 0.4}}) for i in range(10)]
run_grid(grid_jobs.square, jobs, GridLog(Path({folder!r}) / "rows.jsonl", "test grid", fields={{"x": int}}),
         progress=False, quiet=True)
"""


def test_two_processes_on_one_folder_run_each_job_once(tmp_path):
    folder = tmp_path / "run"
    code = _PROCESS.format(here=str(HERE), runs=str(tmp_path / "runs.txt"), folder=str(folder))
    first = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while not (folder / "rows.jsonl").exists() and time.time() < deadline:  # the first is working
        time.sleep(0.05)
    second = subprocess.Popen([sys.executable, "-c", code])
    assert first.wait(timeout=180) == 0 and second.wait(timeout=180) == 0
    assert sorted(_runs(tmp_path)) == list(range(10))  # no job ran twice, none was lost
    rows = _log(folder).lines()
    assert sorted(r["key"] for r in rows) == [f"x{i}" for i in range(10)]


def _claim(folder: Path, key: str, host: str, pid: int, age: float = 0.0) -> Path:
    path = folder / "claims" / f"{key}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{host} {pid} {time.time():.0f}\n")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_claims_of_dead_or_silent_processes_are_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _claim(folder, "x0", socket.gethostname(), int(dead.stdout))   # a process of this host that died
    _claim(folder, "x1", "node-17", 4242, age=3600)                  # another host, silent for an hour
    _claim(folder, "x2", "node-18", 4242)                            # another host, refreshed just now
    rows = run_grid(grid_jobs.square, _jobs(tmp_path, 4), _log(folder), progress=False)
    assert sorted(rows) == ["x0", "x1", "x3"]
    assert sorted(_runs(tmp_path)) == [0, 1, 3]
    assert "1 job(s) of this test grid are running in other processes" in capsys.readouterr().err
    assert (folder / "claims" / "x2.claim").exists()  # not ours to remove


def test_corrupted_log_keeps_good_lines_and_reruns_bad_ones(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    good = [json.dumps({"key": f"x{i}", "x": i, "y": i * i}) for i in range(3)]
    (folder / "rows.jsonl").write_bytes(
        (good[0] + "\n").encode()
        + b'{"key": "x3", "x": 3}\n'                        # valid JSON, wrong shape (no y)
        + b'{"key": "x4", "x": 4, "y": "16"}\n'             # wrong type
        + b'\xff\xfe not text\n'                            # one non-UTF-8 byte sequence
        + (good[1] + "\n").encode()
        + b"[1, 2]\n"                                       # JSON, not an object
        + (good[0] + "\n").encode()                         # a duplicate row (two processes): counted once
        + b'{"key": not json}\n'
        + good[1].encode()[:-7] + b"\n"                      # a line torn by a crash, later appends after it
        + good[2].encode()[:-5])                            # torn last line: a crash mid-append
    log = _log(folder)
    assert sorted(log.results()) == ["x0", "x1"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 5 line(s)" in err and "line 4: not UTF-8" in err
    rows = run_grid(grid_jobs.square, _jobs(tmp_path, 5), log, progress=False)
    assert sorted(rows) == [f"x{i}" for i in range(5)]
    assert sorted(_runs(tmp_path)) == [2, 3, 4]
    assert sorted(log.results()) == [f"x{i}" for i in range(5)]  # appended after the torn line, cleanly


def test_field_problem_names_the_field():
    assert field_problem({"a": 1}, {"a": int}) is None
    assert field_problem({"a": True}, {"a": NUMBER}) == "'a' is bool"
    assert field_problem({"a": None}, {"a": (int, type(None))}) is None
    assert field_problem({}, {"a": int}) == "no 'a'"
    assert field_problem([1], {"a": int}) == "not a JSON object"


def test_bad_backend_and_missing_ray_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(AttnlabError, match="unknown backend 'slurm'"):
        run_grid(grid_jobs.square, _jobs(tmp_path, 1), _log(tmp_path), backend="slurm", progress=False)
    with pytest.raises(AttnlabError, match="--device cuda:1 with --backend ray"):
        run_grid(grid_jobs.square, _jobs(tmp_path, 1), _log(tmp_path), backend="ray", device="cuda:1",
                 progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(AttnlabError, match=r"pip install 'attnlab\[ray\]'"):
        run_grid(grid_jobs.square, _jobs(tmp_path, 1), _log(tmp_path), backend="ray", progress=False)


def test_a_log_with_no_good_line_is_a_one_line_error(tmp_path):
    (tmp_path / "rows.jsonl").write_bytes(b"\xff\xfe\x00\x01\n")
    with pytest.raises(AttnlabError, match=r"holds no line of a test grid \(line 1: not UTF-8\)"):
        _log(tmp_path).results()


def test_workers_are_spread_over_the_visible_gpus(tmp_path, monkeypatch):
    from attnlab.core import grid

    monkeypatch.setattr(grid, "_visible_gpus", lambda: ["3", "5"])  # as on a box with two GPUs visible
    jobs = [Job(f"x{i}", {"x": i}, gpus=0.5) for i in range(4)]
    rows = run_grid(grid_jobs.visible_gpu, jobs, _log(tmp_path), workers=2, progress=False, device="cuda").values()
    by_pid = {r["pid"]: r["gpu"] for r in rows}
    assert set(by_pid.values()) <= {"3", "5"} and len(set(by_pid.values())) == len(by_pid)  # one GPU per worker
    # a GPU the user named is every worker's: not spread
    rows = run_grid(grid_jobs.visible_gpu, jobs, _log(tmp_path / "named"), workers=2, progress=False,
                    device="cuda:1").values()
    assert {r["gpu"] for r in rows} == {os.environ.get("CUDA_VISIBLE_DEVICES")}
    assert {r["gpu"] for r in run_grid(grid_jobs.visible_gpu, [Job("y", {"x": 9})], _log(tmp_path / "cpu"),
                                       progress=False).values()} == {os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_ctrl_c_then_rerun_resumes(tmp_path):
    """A real SIGINT to a grid running in worker processes: the command stops, releases its claims, and the rerun
    runs only the jobs not logged (the jobs in flight at the interrupt run again)."""
    import signal

    folder = tmp_path / "run"
    code = _PROCESS.format(here=str(HERE), runs=str(tmp_path / "runs.txt"), folder=str(folder)).replace(
        "progress=False, quiet=True)", "progress=False, quiet=True, workers=2)").replace(
        '"sleep": 0.4', '"sleep": 3')  # 12 s of jobs left after the first two: the interrupt lands mid-grid
    # SIGINT as a terminal delivers it: a suite started in the background (`make test &`) ignores SIGINT, which a
    # child would inherit and never see the interrupt
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while len(_log(folder).lines()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the grid finished before the interrupt could land"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
    assert proc.wait(timeout=60) != 0
    done = {r["key"] for r in _log(folder).lines()}
    assert 2 <= len(done) < 10 and not list((folder / "claims").iterdir())
    before = len(_runs(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)
    assert sorted(r["key"] for r in _log(folder).lines()) == [f"x{i}" for i in range(10)]  # each logged once
    rerun = _runs(tmp_path)[before:]
    assert not {f"x{x}" for x in rerun} & done and len(rerun) == len(set(rerun))  # no logged job ran again


def test_the_log_is_read_again_only_when_it_changed(tmp_path, monkeypatch):
    import attnlab.core.grid as grid

    reads = []
    real = grid.scan_jsonl
    monkeypatch.setattr(grid, "scan_jsonl", lambda path: reads.append(path) or real(path))
    log = _log(tmp_path)
    assert log.results() == {} and log.results() == {} and len(reads) == 1  # no file yet: read once
    log.append({"key": "a", "x": 1, "y": 2.0})
    assert list(log.results()) == ["a"] and list(log.results()) == ["a"] and len(reads) == 2
    with open(log.path, "a", encoding="utf-8") as f:  # another process appends: size and time change
        f.write(json.dumps({"key": "b", "x": 2, "y": 3.0}) + "\n")
    assert list(log.results()) == ["a", "b"] and len(reads) == 3
    log.path.write_text(json.dumps({"key": "c", "x": 3, "y": 1.0}) + "\n")  # replaced, e.g. by a restore
    assert list(log.results()) == ["c"] and len(reads) == 4
