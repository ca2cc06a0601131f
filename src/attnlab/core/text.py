"""Text for calibration and evaluation: local .txt/.jsonl files, HF ``datasets`` when installed, and the
built-in corpus (CPython's ``pydoc_data.topics``: ~465k characters of English that every Python has).

Every source is split into disjoint calibration and held-out parts at the level of documents, by a hash
(:func:`_heldout_key`), so the split is the same on every machine and does not depend on file or
dictionary order: a built-in topic by its name, any other document by its text (so a document repeated
in a source lands on one side only). Documents are the built-in topics, the lines of a .jsonl file, the
rows of a dataset, and the paragraphs (blank-line separated, as ``datasets``' text loader's
``sample_by="paragraph"``) of a .txt file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .errors import AttnlabError

#: ``all`` is the whole source, for text that was never calibrated on (e.g. a separate test file).
SPLITS = ("calibration", "heldout", "all")
BUILTIN = "builtin"
#: The share of documents a source holds out unless ``builtin:F`` says otherwise.
HELDOUT_FRACTION = 0.2


def builtin_topics() -> dict[str, str]:
    """The raw built-in corpus: pydoc topic name -> text."""
    from pydoc_data.topics import topics

    return dict(topics)


def document_hash(text: str) -> str:
    """A document's identity in records: the first 16 hex digits of the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _heldout_key(name: str) -> float:
    """A number in [0, 1) fixed by ``name`` alone (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64


def split_documents(docs: list[str], heldout_fraction: float = HELDOUT_FRACTION,
                    keys: list[str] | None = None) -> dict[str, list[str]]:
    """{"calibration": [...], "heldout": [...]}: a document is held out when the hash of its key (default: its
    text) falls below ``heldout_fraction``; each part keeps the documents' order."""
    if not 0.0 < heldout_fraction < 1.0:
        raise AttnlabError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    parts: dict[str, list[str]] = {"calibration": [], "heldout": []}
    for doc, key in zip(docs, docs if keys is None else keys, strict=True):
        parts["heldout" if _heldout_key(key) < heldout_fraction else "calibration"].append(doc)
    return parts


def split_builtin(heldout_fraction: float = HELDOUT_FRACTION) -> dict[str, list[str]]:
    """The built-in corpus split by topic name (:func:`split_documents`), each part ordered by topic name."""
    names, texts = zip(*sorted(builtin_topics().items()), strict=True)
    return split_documents(list(texts), heldout_fraction, keys=list(names))


def _read_jsonl(path: Path, text: str, field: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
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
        return HELDOUT_FRACTION
    try:
        return float(fraction)
    except ValueError:
        raise AttnlabError(f"{source!r}: expected builtin:FRACTION with a number, e.g. builtin:0.1") from None


def _documents(source: str, field: str) -> list[str]:
    """Every document of a non-built-in source, in its order, blank ones dropped."""
    if source.startswith("hf:"):
        docs = _load_hf(source, field)
    else:
        path = Path(source)
        if not path.exists():
            raise AttnlabError(f"text source not found: {path} (give a .txt/.jsonl file, 'builtin' or hf:NAME)")
        if path.suffix not in (".jsonl", ".txt", ".md", ""):
            raise AttnlabError(f"{path}: unsupported text file type {path.suffix!r} (use .txt or .jsonl)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AttnlabError(f"{path}: not UTF-8 text (convert it, e.g. with iconv -t UTF-8)") from None
        docs = _read_jsonl(path, text, field) if path.suffix == ".jsonl" else re.split(r"\n\s*\n", text)
    docs = [d.strip("\n") for d in docs if d.strip()]
    if not docs:
        raise AttnlabError(f"{source}: contains no text")
    return docs


def load_texts(source: str | Path, split: str = "calibration", field: str = "text") -> list[str]:
    """The documents of ``source``'s ``split`` (calibration, heldout or all): ``"builtin"`` or ``"builtin:F"``
    (F = held-out fraction, default 0.2), a .txt file (paragraphs), a .jsonl file (one document per line,
    from ``field``), or ``hf:NAME[:CONFIG][@SPLIT]``. A part with no document is a one-line error."""
    if split not in SPLITS:
        raise AttnlabError(f"unknown split {split!r} (use one of {', '.join(SPLITS)})")
    source = str(source)
    if source == BUILTIN or source.startswith(BUILTIN + ":"):
        parts = split_builtin(_builtin_fraction(source))
        return parts["calibration"] + parts["heldout"] if split == "all" else parts[split]
    docs = _documents(source, field)
    if split == "all":
        return docs
    part = split_documents(docs)[split]
    if not part:
        raise AttnlabError(f"{source}: none of its {len(docs)} documents falls in the {split} split (a hash "
                           f"holds out {HELDOUT_FRACTION:.0%} of the documents); give more documents, or evaluate "
                           f"a separate file with its whole text")
    return part


def describe(source: str | Path, split: str = "calibration", docs: list[str] | None = None) -> dict:
    """What a run record stores about its text: the source, split, document and character counts, a digest
    (``docs``: the split's documents when the caller has loaded them already)."""
    docs = load_texts(source, split) if docs is None else docs
    digest = hashlib.sha256("\x00".join(docs).encode("utf-8")).hexdigest()[:16]
    return {"source": str(source), "split": split, "documents": len(docs), "characters": sum(map(len, docs)),
            "sha256_16": digest}
