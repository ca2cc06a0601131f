"""Run records: config + metrics + timings + versions + seed, as one JSON file written atomically.

A record is what a tour step, a sweep or a benchmark leaves behind; :mod:`attnlab.core.report` renders a
set of them as one HTML page. Figures are PNG files stored beside the record and referenced by a path
relative to the record's file, so a record directory can be moved as a whole.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .atomic import atomic_write_json
from .errors import AttnlabError
from .runtime import environment

SCHEMA = "attnlab.record/1"

#: The JSON types a record's fields must have (checked on load, so a malformed file is named, not rendered).
_FIELD_TYPES = {"name": str, "title": str, "command": str, "seed": int, "config": dict, "metrics": dict,
                "timings": dict, "tables": list, "figures": list, "notes": list, "status": str, "env": dict}


@dataclass
class Table:
    """A small table for the report: ``rows`` are lists aligned with ``columns``."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    command: str | None = None  # the command that reproduces this table, when it differs from the record's


@dataclass
class Figure:
    """A PNG plot; ``path`` is relative to the directory of the record file (or absolute)."""

    path: str
    caption: str
    command: str | None = None


@dataclass
class RunRecord:
    """One run: what was asked (config, seed), what came out (metrics, tables, figures), and how long."""

    name: str
    title: str
    command: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    env: dict[str, Any] = field(default_factory=environment)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema: str = SCHEMA

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """``with record.timed("compile"): ...`` stores the wall time in ``timings[key]`` (seconds)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = round(time.perf_counter() - t0, 6)

    def add_table(self, title: str, columns: list[str], rows: list[list[Any]], command: str | None = None) -> Table:
        table = Table(title, list(columns), [list(r) for r in rows], command)
        self.tables.append(table)
        return table

    def add_figure(self, path: str | Path, caption: str, command: str | None = None) -> Figure:
        fig = Figure(str(path), caption, command)
        self.figures.append(fig)
        return fig

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON, atomically. Figure paths under the record's directory are made relative."""
        path = Path(path)
        data = self.to_dict()
        for fig in data["figures"]:
            p = Path(fig["path"])
            if p.is_absolute():
                with contextlib.suppress(ValueError):
                    fig["path"] = str(p.relative_to(path.parent.resolve()))
        return atomic_write_json(path, data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        if data.get("schema") != SCHEMA:
            raise AttnlabError(f"not an attnlab run record (schema {data.get('schema')!r}, expected {SCHEMA!r})")
        problems = [f"{key} is not {kind.__name__}" for key, kind in _FIELD_TYPES.items()
                    if key in data and not isinstance(data[key], kind)]
        problems += [f"{key} missing" for key in ("name", "title", "command", "seed") if key not in data]
        if problems:
            raise AttnlabError(f"malformed run record: {', '.join(problems)}")
        data = dict(data)
        try:
            data["tables"] = [Table(**t) for t in data.get("tables", [])]
            data["figures"] = [Figure(**f) for f in data.get("figures", [])]
        except TypeError as e:
            raise AttnlabError(f"malformed run record: a table or figure has wrong fields ({e})") from None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> "RunRecord":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AttnlabError(f"record not found: {path}") from None
        except json.JSONDecodeError as e:
            raise AttnlabError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(data, dict):
            raise AttnlabError(f"{path}: not an attnlab run record (expected a JSON object)")
        return cls.from_dict(data)


def find_records(root: str | Path) -> list[tuple[Path, RunRecord]]:
    """All run records under ``root`` (a record file or a directory searched recursively), sorted by path.

    JSON files that are not records are ignored; a ``record.json`` (or a file with the record schema) that
    cannot be read comes back as a failed record naming the problem, so a report shows it instead of
    silently leaving it out.
    """
    root = Path(root)
    if not root.exists():
        raise AttnlabError(f"no such file or directory: {root}")
    paths = [root] if root.is_file() else sorted(root.rglob("*.json"))
    found = []
    for p in paths:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            if p.name == "record.json":
                found.append((p, _malformed(p, f"not readable JSON ({type(e).__name__}: {e})")))
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            if p.name == "record.json":
                found.append((p, _malformed(p, "not an attnlab run record (schema missing or different)")))
            continue
        try:
            found.append((p, RunRecord.from_dict(data)))
        except AttnlabError as e:
            found.append((p, _malformed(p, str(e))))
    return found


UNREADABLE = "unreadable record"


def _malformed(path: Path, reason: str) -> RunRecord:
    return RunRecord(name=path.parent.name or "record", title=f"{UNREADABLE} {path}", command="(none)", seed=0,
                     status="failed", error=f"{path}: {reason}")
