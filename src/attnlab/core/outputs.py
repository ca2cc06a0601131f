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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; give the folder the mode mkdir would
    except OSError as e:
        raise os_error(e, path) from None
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
    """
    path = Path(path)
    marker = path / MARKER
    config = json.loads(json.dumps(config, default=str))  # as the marker stores it
    if path.is_dir() and marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            saved = {}
        same = saved.get("kind") == what and saved.get("config") == config
        if same and not overwrite:
            if not quiet:
                print(f"attnlab: resuming the {what} in {path}", file=sys.stderr, flush=True)
            return path, True
        if not same and not overwrite:
            raise AttnlabError(f"{path} holds another {saved.get('kind', 'run')} (different config); pass "
                               "--overwrite to replace it, or choose another --out")
    _check_dir_target(path, overwrite, what)
    try:
        if path.exists() and overwrite:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        _write_marker(path, {"kind": what, "config": config})
    except OSError as e:
        raise os_error(e, path) from None
    return path, False
