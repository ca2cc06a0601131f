"""The one runner for grids of independent jobs (sweeps, comparisons): stable keys, one append-only log,
job claiming, and a local or Ray backend.

A grid is a list of :class:`Job` (a stable key, the JSON arguments of one job, the CPUs and GPU fraction it
needs), a module-level function that runs one job and returns its result row, and a :class:`GridLog`: the
JSONL file in the run folder that the rows are appended to. :func:`run_grid`

- skips the jobs whose key the log already holds, so a rerun after Ctrl-C or a crash resumes;
- claims each job before it runs it (a file in ``claims/`` created exclusively, removed when the row is
  logged), so several processes, or machines sharing the folder (a Slurm job array), work on one grid at once
  and each job runs once. A claim whose process died (same host) or that stopped being refreshed (another host,
  ``stale_after`` seconds) is taken over;
- runs the jobs in this process, in ``workers`` spawned processes (spread over the visible GPUs, one GPU per
  worker, when the jobs need a GPU and there are several), or as Ray tasks (each with the resources its job
  declares, so a GPU node packs several small jobs per GPU), always with ``threads`` torch and BLAS threads
  per job;
- appends each row the moment it arrives and shows progress (rate and ETA) on stderr.

Reading a log never loses good lines to bad ones: a torn last line (a crash mid-append) is dropped, and lines
that are not UTF-8, not JSON or not of the grid's shape are named in one stderr line and skipped (their jobs
run again). Analyses take the first row per key, so a row logged twice is counted once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.pool import RemoteTraceback
from pathlib import Path
from typing import Any

from .atomic import append_jsonl, scan_jsonl
from .errors import AttnlabError, require

#: What ``--backend`` accepts.
BACKENDS = ("local", "ray")
#: (log, its bad line numbers) already named on stderr by this process: each is said once, however many
#: times the log is read (a sweep reads it, then its plots read it again).
_REPORTED: set[tuple[Any, ...]] = set()
#: A number in a log line: an int or a float, never a bool.
NUMBER = (int, float)


@dataclass(frozen=True)
class Job:
    """One job of a grid: ``key`` names it in the log (stable across runs), ``args`` (JSON-able) is what the
    job function receives, ``cpus`` and ``gpus`` (a fraction packs several jobs per GPU) are its resources."""

    key: str
    args: Mapping[str, Any]
    cpus: float = 1.0
    gpus: float = 0.0


def field_problem(line: Any, fields: Mapping[str, Any]) -> str | None:
    """What is wrong with ``line`` as a record holding ``fields`` (name -> type or tuple of types; a bool
    is not a number), or None when nothing is."""
    if not isinstance(line, dict):
        return "not a JSON object"
    for name, kind in fields.items():
        if name not in line:
            return f"no {name!r}"
        value = line[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
            return f"{name!r} is {type(value).__name__}"
    return None


def _types(kind: Any) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


class GridLog:
    """The append-only JSONL log of a grid's rows.

    ``key`` is the field naming a row's job; ``fields`` what every row must hold; ``problem`` (instead of
    ``fields``) checks a line of a log that holds lines of several kinds, and ``is_result`` says which of its
    good lines are rows (memorize logs each probe of a search before the search's row).
    """

    def __init__(self, path: str | os.PathLike, what: str, key: str = "key", fields: Mapping[str, Any] | None = None,
                 problem: Callable[[Any], str | None] | None = None,
                 is_result: Callable[[dict[str, Any]], bool] | None = None):
        self.path = Path(path)
        self.what = what
        self.key = key
        self._problem = problem or (lambda line: field_problem(line, {key: str, **(fields or {})}))
        self._is_result = is_result or (lambda line: True)
        self._scanned: tuple[tuple[int, int, int] | None, Any] | None = None  # (file identity, scan_jsonl's result)

    def _scan(self) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
        """:func:`~attnlab.core.atomic.scan_jsonl` of the log, read again only when the file changed (inode, size
        or modification time): the runner asks before every claim, and the log grows only between finishes."""
        try:
            st = self.path.stat()
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            identity = None
        if self._scanned is None or self._scanned[0] != identity:
            self._scanned = identity, scan_jsonl(self.path)
        lines, problems = self._scanned[1]
        return lines, list(problems)

    def lines(self, report: bool = True) -> list[dict[str, Any]]:
        """Every good line in order; bad ones are named on stderr when ``report`` (once per process). A log
        with lines but none good (a binary file, another tool's log) is a one-line error."""
        lines, problems = self._scan()
        good = []
        for number, line in lines:
            problem = self._problem(line)
            if problem is None:
                good.append(dict(line))  # a copy: the scan is kept for the next call, and callers may edit rows
            else:
                problems.append((number, problem))
        if problems and not good:
            number, problem = min(problems)
            raise AttnlabError(f"{self.path} holds no line of a {self.what} (line {number}: {problem}); choose "
                               "another folder, or remove the file")
        if problems and report:
            problems.sort()
            seen = (str(self.path), *(n for n, _ in problems))
            if seen not in _REPORTED:
                _REPORTED.add(seen)
                shown = "; ".join(f"line {n}: {p}" for n, p in problems[:3]) + ("; ..." if len(problems) > 3 else "")
                print(f"attnlab: skipped {len(problems)} line(s) of {self.path} that are not lines of a {self.what} "
                      f"({shown}); their jobs run again", file=sys.stderr, flush=True)
        return good

    def results(self, report: bool = True) -> dict[str, dict[str, Any]]:
        """key -> the first row logged for it (a row logged twice, e.g. by two processes, counts once)."""
        rows: dict[str, dict[str, Any]] = {}
        for line in self.lines(report):
            if self._is_result(line):
                rows.setdefault(line[self.key], line)
        return rows

    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path, row)


class Claims:
    """Exclusive claims on jobs: one file per job in ``folder/claims``, created with ``O_EXCL`` (atomic on
    local and cluster filesystems), holding the claimant's host and pid, refreshed while held."""

    def __init__(self, folder: Path, stale_after: float = 300.0):
        self.dir = folder / "claims"
        self.stale_after = stale_after
        self.host = socket.gethostname()
        self.held: set[str] = set()
        self._stop = threading.Event()

    def _path(self, key: str) -> Path:
        name = key if re.fullmatch(r"[A-Za-z0-9._=+-]{1,100}", key) else hashlib.sha1(key.encode()).hexdigest()
        return self.dir / f"{name}.claim"

    def take(self, key: str) -> bool:
        """Claim ``key``; False when a live process holds it."""
        path = self._path(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if not self._take_over(path):
                    return False
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"{self.host} {os.getpid()} {time.time():.0f}\n")
            self.held.add(key)
            return True
        return False

    def _take_over(self, path: Path) -> bool:
        """Remove ``path`` when its claimant is gone; True when it was removed (by us)."""
        try:
            before = path.stat()
            try:
                host, pid, _ = path.read_text(encoding="utf-8").split()
            except (ValueError, UnicodeDecodeError):
                host, pid = "", "0"  # being written, or garbage: judged by its age alone
        except FileNotFoundError:
            return True  # released meanwhile
        if host == self.host and pid.isdigit() and int(pid) > 0:
            alive = _alive(int(pid))
        else:
            alive = time.time() - before.st_mtime < self.stale_after
        if alive:
            return False
        grave = path.with_name(f"{path.name}.stale-{self.host}-{os.getpid()}")
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return True
        if grave.stat().st_ino != before.st_ino:  # someone took it over first and claimed afresh: give it back
            with contextlib.suppress(FileExistsError):
                os.link(grave, path)
            grave.unlink()
            return False
        grave.unlink()
        return True

    def release(self, key: str) -> None:
        if key in self.held:
            self.held.discard(key)
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()

    def holds_elsewhere(self, key: str) -> bool:
        return key not in self.held and self._path(key).exists()

    @contextlib.contextmanager
    def active(self) -> Iterator[Claims]:
        """Refresh the held claims in the background; release them all on the way out (Ctrl-C included)."""
        threading.Thread(target=self._heartbeat, daemon=True).start()
        try:
            yield self
        finally:
            self._stop.set()
            for key in list(self.held):
                self.release(key)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.stale_after / 5):
            for key in list(self.held):
                with contextlib.suppress(FileNotFoundError):
                    os.utime(self._path(key))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pin(threads: int, gpu: str | None = None) -> None:
    """A worker's first act: ``threads`` torch and BLAS threads (OpenMP told before torch starts its pool)
    and, when ``gpu`` is given, that GPU as its only visible device (set before CUDA starts, so a job's
    ``cuda`` is that GPU)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from .runtime import set_threads

    set_threads(threads)


def _serve(conn: Connection, fn: Callable[[Mapping[str, Any]], dict[str, Any]], threads: int,
           gpu: str | None) -> None:
    """A local worker: job arguments in on ``conn``, (row, None) or (None, (error, traceback)) out, until None.
    Ctrl-C is the parent's to handle (it stops the workers), so a worker ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pin(threads, gpu)
    while (args := conn.recv()) is not None:
        try:
            reply: tuple[Any, Any] = (fn(args), None)
        except Exception as e:
            reply = (None, (e, traceback.format_exc()))
        try:
            conn.send(reply)
        except Exception as e:  # an error or row that does not pickle: its text still reaches the parent
            conn.send((None, (RuntimeError(f"{type(e).__name__}: {e}"), traceback.format_exc())))


def _visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return names[:torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]


def _ray_task(fn: Callable[[Mapping[str, Any]], dict[str, Any]], args: Mapping[str, Any],
              threads: int) -> dict[str, Any]:
    _pin(threads)
    return fn(args)


@contextlib.contextmanager
def _threads_here(threads: int | None) -> Iterator[None]:
    """``threads`` threads in this process for the grid (None: as they are), then the caller's count again."""
    if threads is None:
        yield
        return
    import torch

    from .runtime import set_threads

    before = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        set_threads(before)


def check_backend(backend: str, device: str | None = None) -> None:
    """One-line errors for grid options that cannot work, before anything is written: an unknown backend, Ray
    not installed, or a numbered GPU with Ray (which gives each task its own GPU as the only one it sees)."""
    require(backend in BACKENDS, f"unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise AttnlabError("--backend ray needs Ray: pip install 'attnlab[ray]' (or use --backend local)") \
                from None
        require(not (device and re.fullmatch(r"cuda:\d+", device)),
                f"--device {device} with --backend ray: Ray gives each task its GPU (use --device cuda; choose the "
                "GPUs with CUDA_VISIBLE_DEVICES or Ray's resources)")


def run_grid(fn: Callable[[Mapping[str, Any]], dict[str, Any]], jobs: list[Job], log: GridLog, *,
             workers: int = 1, threads: int | None = 1, backend: str = "local", ray_address: str | None = None,
             progress: bool = True, quiet: bool = False, desc: str = "grid", unit: str = "job",
             postfix: Callable[[dict[str, Any]], str] | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None, device: str | None = None,
             stale_after: float = 300.0) -> dict[str, dict[str, Any]]:
    """Run every job of ``jobs`` whose key ``log`` lacks; returns key -> row for the jobs' keys now logged.

    ``fn`` must be importable by name (it runs in spawned processes or Ray workers; ``workers=1`` runs it
    here). ``threads`` None keeps this process's thread count for jobs run here (workers get one). ``device``
    is the jobs' device: with plain ``cuda`` (not ``cuda:N``) local workers are spread over the visible GPUs.
    Jobs another live process has claimed are left to it (said on stderr unless ``quiet``).
    """
    check_backend(backend, device)
    require(workers >= 1 and (threads is None or threads >= 1),
            f"workers and threads must be at least 1, got {workers} and {threads}")
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("two jobs of one grid share a key")
    pending = [job for job in jobs if job.key not in log.results()]
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=desc, unit=unit, file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    claims = Claims(log.path.parent, stale_after)
    elsewhere: list[str] = []

    def claim_next() -> Job | None:
        while pending:
            job = pending.pop(0)
            if not claims.take(job.key):
                elsewhere.append(job.key)
            elif job.key in log.results(report=False):  # finished by another process since we read the log
                claims.release(job.key)
            else:
                return job
        return None

    def finish(job: Job, row: dict[str, Any]) -> None:
        row = {**row, log.key: job.key}
        log.append(row)
        claims.release(job.key)
        bar.update()
        if postfix:
            bar.set_postfix_str(postfix(row), refresh=False)
        if on_result:
            on_result(row)

    try:
        with claims.active():
            if backend == "ray":
                _run_ray(fn, claim_next, finish, threads or 1, ray_address, quiet)
            elif workers == 1 or len(pending) <= 1:
                with _threads_here(threads):
                    for job in iter(claim_next, None):
                        finish(job, fn(job.args))
            else:
                gpus = _visible_gpus() if device == "cuda" and any(job.gpus for job in pending) else []
                _run_pool(fn, claim_next, finish, min(workers, len(pending)), threads or 1, gpus)
    finally:
        bar.close()
    running = [k for k in elsewhere if claims.holds_elsewhere(k)]
    if running and not quiet:
        print(f"attnlab: {len(running)} job(s) of this {log.what} are running in other processes (claims in "
              f"{claims.dir}); rerun when they finish to collect them", file=sys.stderr, flush=True)
    done = log.results(report=False)
    return {k: done[k] for k in keys if k in done}


def _run_pool(fn, claim_next, finish, workers: int, threads: int, gpus: list[str]) -> None:
    """At most ``workers`` jobs in flight in spawned processes, spread round-robin over ``gpus`` when there
    are several; a job is claimed only when a slot frees, so other processes sharing the folder take their
    share. Each worker has its own pipe (no lock shared between processes, so stopping workers at an error or
    Ctrl-C cannot deadlock, as ``multiprocessing.Pool.terminate`` can), and a worker that dies (killed, out of
    memory) is an error naming its job, not a wait forever."""
    ctx = mp.get_context("spawn")
    procs: dict[Connection, Any] = {}
    busy: dict[Connection, Job] = {}
    try:
        for i in range(workers):
            conn, theirs = ctx.Pipe()
            gpu = gpus[i % len(gpus)] if len(gpus) > 1 else None
            procs[conn] = ctx.Process(target=_serve, args=(theirs, fn, threads, gpu), daemon=True)
            procs[conn].start()
            theirs.close()  # the worker holds the only other end: its death is end-of-file here
        idle = list(procs)
        while True:
            while idle and (job := claim_next()) is not None:
                conn = idle.pop()
                conn.send(dict(job.args))
                busy[conn] = job
            if not busy:
                break
            for conn in wait(list(busy)):
                job = busy.pop(conn)
                try:
                    row, error = conn.recv()
                except EOFError:
                    procs[conn].join(5)
                    raise RuntimeError(f"the worker running job {job.key} died (exit code {procs[conn].exitcode})"
                                       "; rerun to resume") from None
                if error is not None:
                    raise error[0] from RemoteTraceback(error[1])
                finish(job, row)
                idle.append(conn)
    finally:  # a worker between jobs is told to stop; one in a job (an error elsewhere, Ctrl-C) is stopped
        for conn, proc in procs.items():
            if conn in busy:
                proc.terminate()
            else:
                with contextlib.suppress(OSError):
                    conn.send(None)
        for conn, proc in procs.items():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


def _run_ray(fn, claim_next, finish, threads: int, address: str | None, quiet: bool) -> None:
    """Every claimable job as a Ray task with its job's resources (Ray queues what the cluster cannot yet
    place); rows come back to this process, which alone writes the log."""
    import ray

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        except ConnectionError as e:
            raise AttnlabError(f"cannot join the Ray cluster at {address}: {e} (check --ray-address)") from None
        if not quiet:
            res = ray.cluster_resources()
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            print(f"attnlab: running on {where} ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs)",
                  file=sys.stderr, flush=True)
    task = ray.remote(_ray_task)
    refs: dict[Any, Job] = {}
    try:
        while (job := claim_next()) is not None:
            refs[task.options(num_cpus=job.cpus, num_gpus=job.gpus).remote(fn, dict(job.args), threads)] = job
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(ready[0])
            finish(job, ray.get(ready[0]))
    finally:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
