"""User-facing errors. The CLI turns an :class:`AttnlabError` into one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path


class AttnlabError(Exception):
    """Bad input or an impossible request: the message is one line that names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)


def require(condition: bool, message: str) -> None:
    """Raise :class:`AttnlabError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AttnlabError(message)


def refuse_unknown_keys(given, known, where: str) -> None:
    """A one-line error naming the keys of ``given`` (a config mapping) that are not in ``known``."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise AttnlabError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def existing_file(path) -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise AttnlabError(f"file not found: {p} (check the path)")
    if not p.is_file():
        raise AttnlabError(f"not a file: {p} (give a file, not a directory)")
    return p
