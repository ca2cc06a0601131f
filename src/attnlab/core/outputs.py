"""Where commands write: nothing a user saved is lost, nothing is left half-written.

Three kinds of output, one function each:

- :func:`output_file` — one file (a report page, a record, a statistics file): an existing file is refused
  unless ``overwrite``; the parent must be (or become) a folder. Write it with :mod:`attnlab.core.atomic`.
- :func:`artifact_dir` — a folder written in one go (a compiled model, a checkpoint, a dataset): built in a
  temporary sibling and swapped in only when complete, so a crash or a full disk leaves the old folder (or
  nothing). An existing non-empty folder is refused unless ``overwrite``; overwriting replaces it whole,
  so no stale file (an old PNG, an old layer) survives.
- :func:`run_dir` — a folder a long run appends to (a sweep, a training run): the same folder with the same
  config resumes (one line on stderr says so); another config, or a folder that is not an attnlab run, is
  refused unless ``overwrite``.

Every problem is an :class:`AttnlabError` (exit code 2, one line naming the path and the fix); OS errors
name the path the user gave, never a temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .atomic import current_umask
from .errors import AttnlabError

#: The marker file in every folder attnlab writes: what wrote it, and (for run folders) the run's config.
MARKER = ".attnlab.json"


def os_error(e: OSError, path: str | os.PathLike, action: str = "write") -> AttnlabError:
    """An :class:`AttnlabError` for an OS error on the user's ``path`` (not on a temporary name)."""
    reason = e.strerror or type(e).__name__
    fix = "choose another --out, or fix the permissions/space" if action == "write" else "check the path"
    return AttnlabError(f"cannot {action} {path}: {reason} ({fix})")


def _check_parent(path: Path) -> None:
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise AttnlabError(f"cannot write {path}: {parent} is a file, not a folder (choose another --out)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise AttnlabError(f"cannot write {path}: {parent} is not writable (choose another --out)")
            return


def output_file(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that ``path`` can be written as a new file (or replaced, with ``overwrite``); returns it."""
    path = Path(path)
    if path.is_dir():
        raise AttnlabError(f"{path} is a folder; give a file name for --out")
    if path.exists() and not overwrite:
        raise AttnlabError(f"{path} exists; pass --overwrite to replace it, or choose another --out")
    _check_parent(path)
    return path


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _marker_kind(path: Path) -> str | None:
    """The ``kind`` recorded in ``path``'s marker, "" for an unreadable marker, None for no marker."""
    try:
        return str(json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind", ""))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return ""


def _check_dir_target(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise AttnlabError(f"{path} is a file, not a folder (choose another --out)")
    if path.exists() and not _is_empty_dir(path):
        if not overwrite:
            raise AttnlabError(f"{path} exists and is not empty; pass --overwrite to replace it, or choose "
                               "another --out")
        kind = _marker_kind(path)
        if kind is None:
            raise AttnlabError(f"{path} was not written by attnlab; --overwrite only replaces attnlab output "
                               "folders (choose another --out, or remove it yourself)")
        if kind != what:  # --overwrite of a training run must not delete the dataset it was pointed at
            raise AttnlabError(f"{path} holds a {kind or 'different output'}, not a {what}; --overwrite only "
                               f"replaces a {what} (choose another --out)")
    _check_parent(path)


def _sibling_tmp(path: Path) -> Path:
    """A new empty hidden folder beside ``path`` (same filesystem, so a rename moves it into place)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; give the folder the mode mkdir would
    except OSError as e:
        raise os_error(e, path) from None
    return tmp


def _write_marker(folder: Path, info: dict[str, Any]) -> None:
    from .atomic import atomic_write_json

    atomic_write_json(folder / MARKER, {"attnlab": "output", **info})


@contextlib.contextmanager
def artifact_dir(path: str | os.PathLike, overwrite: bool = False, what: str = "output") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path`` in one rename.

    On any exception the temporary folder is removed and ``path`` is untouched. ``what`` goes into the
    marker file (``{"kind": what}``) so a later ``--overwrite`` knows the folder is attnlab's.
    """
    path = Path(path)
    _check_dir_target(path, overwrite, what)
    tmp = _sibling_tmp(path)
    try:
        try:
            yield tmp
            _write_marker(tmp, {"kind": what})
        except OSError as e:
            raise os_error(e, path) from None
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def run_dir(path: str | os.PathLike, config: dict[str, Any], overwrite: bool = False, what: str = "run",
            quiet: bool = False) -> tuple[Path, bool]:
    """Prepare the folder of a resumable run; returns ``(path, resuming)``.

    An empty or new folder starts a run; a folder holding a run of the same ``what`` and ``config`` resumes
    it (said on stderr); anything else is refused unless ``overwrite``, which clears an attnlab run folder.
    A new folder appears with its marker in one rename, so processes started at once on one folder (a job
    array) agree: one starts the run, the others resume it.
    """
    path = Path(path)
    config = json.loads(json.dumps(config, default=str))  # as the marker stores it
    for _ in range(3):
        if _resumes(path, config, what, overwrite, quiet):
            return path, True
        try:
            _check_dir_target(path, overwrite, what)
        except AttnlabError:
            if not overwrite and (path / MARKER).is_file():
                continue  # another process made the folder since the marker was read: look again
            raise
        if overwrite and path.exists():
            try:
                shutil.rmtree(path)
            except OSError as e:
                raise os_error(e, path) from None
        if _create_run_dir(path, {"kind": what, "config": config}):
            return path, False
        overwrite = False  # another process made the folder meanwhile: resume its run, never clear it
    raise AttnlabError(f"{path} appeared while this run was creating it, without a readable attnlab marker; "
                       "choose another --out")


def _resumes(path: Path, config: dict[str, Any], what: str, overwrite: bool, quiet: bool) -> bool:
    """True when ``path`` holds a run of ``what`` with ``config`` to resume; refuses another run."""
    if not path.is_dir():
        return False
    try:
        saved = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        saved = {}
    same = isinstance(saved, dict) and saved.get("kind") == what and saved.get("config") == config
    if same and not overwrite:
        if not quiet:
            print(f"attnlab: resuming the {what} in {path}", file=sys.stderr, flush=True)
        return True
    if not same and not overwrite:
        kind = saved.get("kind", "run") if isinstance(saved, dict) else "run"
        raise AttnlabError(f"{path} holds another {kind} (different config); pass "
                           "--overwrite to replace it, or choose another --out")
    return False


def _create_run_dir(path: Path, marker: dict[str, Any]) -> bool:
    """Make ``path`` (absent or an empty folder) a run folder holding ``marker``, in one rename; False when
    another process made it first."""
    tmp = _sibling_tmp(path)
    try:
        try:
            _write_marker(tmp, marker)
        except OSError as e:
            raise os_error(e, path) from None
        try:
            os.rename(tmp, path)  # atomic; replaces an empty folder, fails on a non-empty one
        except OSError as e:
            if path.is_dir() and (path / MARKER).exists():
                return False
            raise os_error(e, path) from None
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
