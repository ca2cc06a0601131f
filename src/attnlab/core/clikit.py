"""What every attnlab command shares: the parser class with one-line errors, the common flags, typed
argument checks and the way results are printed (``--json``: one JSON object on stdout, nothing else)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

from .atomic import _jsonable
from .errors import AttnlabError
from .runtime import DTYPES


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (exit code 2) instead of usage plus message."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def common_parser() -> argparse.ArgumentParser:
    """The flags every command takes (used as a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--seed", type=nonneg_int, default=0, help="random seed, recorded with the run (default 0)")
    g.add_argument("--threads", type=positive_int, default=None, help="torch and BLAS threads (default: torch's)")
    g.add_argument("--json", action="store_true", help="print one machine-readable JSON object on stdout")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    g.add_argument("--quiet", action="store_true", help="no progress bars or status lines on stderr")
    g.add_argument("--progress", action="store_true",
                   help="progress bars even when stderr is not a terminal (default: only on a terminal)")
    return p


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr when it is a terminal, or when ``--progress`` asks; never with ``--quiet``."""
    if getattr(args, "quiet", False):
        return False
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()


def add_out(p: argparse.ArgumentParser, default: str | None = None, required: bool = False,
            what: str = "output") -> None:
    """``-o/--out`` and ``--overwrite``: commands refuse to replace an existing output unless told to
    (see :mod:`attnlab.core.outputs`). ``what`` names the output, optionally followed by " (details)"."""
    name, _, details = what.partition(" (")
    p.add_argument("-o", "--out", default=default, required=required, help=f"{name} path" +
                   (f" ({details}" if details else "") + (f" (default {default})" if default else ""))
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace an existing {name} (default: refuse; a resumable run resumes)")


def add_device(p: argparse.ArgumentParser, dtype: bool = False) -> None:
    """``--device`` (checked when the command runs, against what this machine has:
    :func:`attnlab.core.runtime.choose_device`) and, where it makes sense, ``--dtype``."""
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default auto)")
    if dtype:
        p.add_argument("--dtype", default="float32", choices=DTYPES, help="model compute precision (default float32)")


def add_grid(p: argparse.ArgumentParser, flag: str = "--workers", what: str = "job", config: bool = False) -> None:
    """How a grid of jobs runs (:func:`attnlab.core.grid.run_grid`): ``--workers`` processes here, or
    ``--backend ray`` on a local Ray instance or the cluster at ``--ray-address``. ``--threads`` (default 1
    for grids) is each job's torch and BLAS thread count, here and in every worker."""
    default = "the config's, else 1" if config else "1"
    p.add_argument(flag, dest="workers", type=positive_int, default=None, metavar="N",
                   help=f"{what}s run at once in worker processes with --backend local (default {default})")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this machine's processes; ray: Ray tasks, each with the resources its job needs "
                        "(needs attnlab[ray]; default local)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join the running Ray cluster at ADDR (e.g. auto, or ray://head:10001; default: start a "
                        "local Ray instance)")


def grid_options(args: argparse.Namespace, threads: int | None = 1) -> dict[str, Any]:
    """The :func:`attnlab.core.grid.run_grid` keywords that :func:`add_grid` and the common flags give, checked
    (:func:`attnlab.core.grid.check_backend`) before the command writes anything; ``workers`` is None when not
    given (the command's config decides), ``threads`` the command's default when --threads is not given (one per
    job for sweeps of small models; None keeps the process's count)."""
    from .grid import check_backend

    if args.ray_address is not None and args.backend != "ray":
        raise AttnlabError("--ray-address needs --backend ray")
    check_backend(args.backend, getattr(args, "device", None))
    return {"workers": args.workers, "threads": args.threads or threads, "backend": args.backend,
            "ray_address": args.ray_address, "progress": show_progress(args), "quiet": args.quiet}


def out_folder(args: argparse.Namespace, what: str) -> contextlib.AbstractContextManager[Path | None]:
    """The ``-o`` folder of a command, checked now (before any work) and swapped in complete at the end
    (:func:`attnlab.core.outputs.artifact_dir`); None when the command was run without ``-o``."""
    if getattr(args, "out", None) is None:
        return contextlib.nullcontext(None)
    from .outputs import artifact_dir

    return artifact_dir(args.out, args.overwrite, what=what)


def _typed(kind: Callable[[str], Any], check: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


positive_int = _typed(int, lambda v: v > 0, "a positive integer")
nonneg_int = _typed(int, lambda v: v >= 0, "a non-negative integer")
positive_float = _typed(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
nonneg_float = _typed(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
unit_float = _typed(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")

_SIZE_SUFFIXES = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def _parse_size(text: str) -> float:
    t = text.strip().upper().replace("_", "")
    suffix = t[-1:] if t[-1:] in _SIZE_SUFFIXES and not t[-1:].isdigit() else ""
    return float(t[: len(t) - len(suffix)]) * _SIZE_SUFFIXES[suffix]


#: A count such as a parameter budget: ``1.3e9``, ``1.3B``, ``350M``, ``500k``.
size = _typed(_parse_size, lambda v: v > 0 and v != float("inf"), "a positive size such as 1.3B, 350M, 5e5")


def emit(args: argparse.Namespace, result: dict[str, Any], text: str | None = None) -> None:
    """Print ``result`` as JSON with ``--json``, else ``text`` (or a key: value listing)."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result, default=_jsonable) + "\n")
    elif text is not None:
        print(text)
    else:
        width = max((len(k) for k in result), default=0)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
