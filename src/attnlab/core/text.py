"""Text for calibration and evaluation: local .txt/.jsonl files, HF ``datasets`` when installed, and the
built-in corpus (CPython's ``pydoc_data.topics``: ~465k characters of English that every Python has).

The built-in corpus is split into disjoint calibration and held-out parts by a hash of each topic's
name, so the split is the same on every machine and does not depend on dictionary order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import AttnlabError

SPLITS = ("calibration", "heldout")
BUILTIN = "builtin"


def builtin_topics() -> dict[str, str]:
    """The raw built-in corpus: pydoc topic name -> text."""
    from pydoc_data.topics import topics

    return dict(topics)


def _heldout_key(name: str) -> float:
    """A number in [0, 1) fixed by the topic name alone (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64


def split_builtin(heldout_fraction: float = 0.2) -> dict[str, list[str]]:
    """Split the built-in corpus into {"calibration": [...], "heldout": [...]} documents, disjointly.

    A topic is held out when the hash of its name falls below ``heldout_fraction``; documents within a
    part are ordered by topic name.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise AttnlabError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name, text in sorted(builtin_topics().items()):
        parts["heldout" if _heldout_key(name) < heldout_fraction else "calibration"].append(text)
    return parts


def _read_jsonl(path: Path, field: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise AttnlabError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise AttnlabError(f"{path}:{lineno}: expected an object with a string field {field!r}")
        docs.append(obj[field])
    return docs


def _load_hf(spec: str, field: str) -> list[str]:
    """``hf:NAME[:CONFIG][@SPLIT]`` through ``datasets`` (local cache or files only: no hub here)."""
    try:
        import datasets  # type: ignore
    except ImportError:
        raise AttnlabError(f"{spec}: the HF `datasets` package is not installed (pip install datasets)") from None
    body, _, split = spec[3:].partition("@")
    name, _, config = body.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as e:  # datasets raises many types; the user needs one line
        raise AttnlabError(f"{spec}: could not load the dataset ({type(e).__name__}: {e})") from None
    if field not in ds.column_names:
        raise AttnlabError(f"{spec}: no column {field!r} (columns: {', '.join(ds.column_names)})")
    return [t for t in ds[field] if isinstance(t, str)]


def _builtin_fraction(source: str) -> float:
    """``builtin`` holds out 0.2 of the topics; ``builtin:F`` holds out a fraction F instead."""
    _, _, fraction = source.partition(":")
    if not fraction:
        return 0.2
    try:
        return float(fraction)
    except ValueError:
        raise AttnlabError(f"{source!r}: expected builtin:FRACTION with a number, e.g. builtin:0.1") from None


def load_texts(source: str | Path, split: str = "calibration", field: str = "text") -> list[str]:
    """Documents from ``source``: ``"builtin"`` or ``"builtin:F"`` (F = held-out fraction, default 0.2; with
    ``split``), a .txt file (one document), a .jsonl file (one document per line, from ``field``), or
    ``hf:NAME[:CONFIG][@SPLIT]``."""
    if split not in SPLITS:
        raise AttnlabError(f"unknown split {split!r} (use one of {', '.join(SPLITS)})")
    source = str(source)
    if source == BUILTIN or source.startswith(BUILTIN + ":"):
        return split_builtin(_builtin_fraction(source))[split]
    if source.startswith("hf:"):
        return _load_hf(source, field)
    path = Path(source)
    if not path.exists():
        raise AttnlabError(f"text source not found: {path} (give a .txt/.jsonl file, 'builtin' or hf:NAME)")
    if path.suffix == ".jsonl":
        docs = _read_jsonl(path, field)
    elif path.suffix in (".txt", ".md", ""):
        docs = [path.read_text(encoding="utf-8")]
    else:
        raise AttnlabError(f"{path}: unsupported text file type {path.suffix!r} (use .txt or .jsonl)")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise AttnlabError(f"{path}: contains no text")
    return docs


def describe(source: str | Path, split: str = "calibration") -> dict:
    """What a run record stores about its text: the source, split, document and character counts, a digest."""
    docs = load_texts(source, split)
    digest = hashlib.sha256("\x00".join(docs).encode("utf-8")).hexdigest()[:16]
    return {"source": str(source), "split": split if str(source).startswith(BUILTIN) else None, "documents": len(docs),
            "characters": sum(map(len, docs)), "sha256_16": digest}
