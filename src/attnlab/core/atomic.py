"""Atomic file writes: a crash mid-write leaves the old file intact (write to a temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Use it with any writer that takes a file name (``safetensors.torch.save_file``, ``fig.savefig``).
    On an exception the temporary file is removed and ``path`` is untouched. ``suffix`` defaults to
    ``path``'s own, so writers that look at the extension still work.
    """
    from .outputs import os_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                                   dir=path.parent)
    except OSError as e:  # name the user's path, not a temporary one
        raise os_error(e, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp_path, path)
    except OSError as e:  # a full disk, a folder in the way: the old file stays, the error names the path
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise os_error(e, path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line and fsync: a resumable log where each finished item is one line.

    The line goes out in one ``write`` on a file opened for appending, so lines from several processes
    appending to one log (a grid shared by workers, or by machines on a POSIX cluster filesystem) do not
    interleave. A crash can at worst leave a torn last line, which :func:`read_jsonl` skips.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        torn = False
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                torn = f.read(1) != b"\n"
        os.write(fd, (("\n" if torn else "") + json.dumps(obj, default=_jsonable) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def scan_jsonl(path: str | os.PathLike) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    """The lines of a JSONL log, each decoded on its own: ``(lines, problems)``, where ``lines`` holds
    ``(line number, value)`` and ``problems`` ``(line number, what is wrong)`` for lines that are not UTF-8
    or not JSON. A torn line (a crash mid-append: the last line, without its newline, or a line that stops
    before its closing bracket, which later appends left in the middle) is neither: it is dropped."""
    path = Path(path)
    if not path.exists():
        return [], []
    raw = path.read_bytes()
    chunks = raw.split(b"\n")
    last_torn = not raw.endswith(b"\n")
    lines: list[tuple[int, Any]] = []
    problems: list[tuple[int, str]] = []
    for number, chunk in enumerate(chunks, 1):
        if not chunk.strip():
            continue
        try:
            lines.append((number, json.loads(chunk.decode("utf-8"))))
        except UnicodeDecodeError:
            problems.append((number, "not UTF-8"))
        except json.JSONDecodeError:
            torn = (last_torn and number == len(chunks)) or not chunk.rstrip().endswith((b"}", b"]"))
            if not torn:
                problems.append((number, "not JSON"))
    return lines, problems


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The values of the readable lines of a JSONL log (torn, non-JSON and non-UTF-8 lines are left out;
    :func:`scan_jsonl` says which)."""
    return [value for _, value in scan_jsonl(path)[0]]


def _jsonable(obj: Any) -> Any:
    """JSON fallback for numpy/torch scalars and arrays and paths."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
