"""``attnlab tour``: run each installed module's ``tour()`` in turn and render one report.

A module's tour is ``tour(out_dir: Path, seed: int) -> RunRecord``: it writes its figures under
``out_dir`` and returns its record. A failing module is recorded as failed (with the error) and the
tour goes on. Before the modules comes ``core``: the environment and the built-in corpus split, which
every module that reads text uses.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .cli import available_modules
from .core.errors import AttnlabError
from .core.records import RunRecord
from .core.report import render_markdown, write_report

TourFn = Callable[[Path, int], RunRecord]


def core_tour(out_dir: Path, seed: int = 0) -> RunRecord:
    """The shared ground: the machine and versions this report ran on, and the built-in corpus split."""
    from .core.plots import plt, save_figure
    from .core.text import split_builtin

    rec = RunRecord(name="core", title="core: environment and built-in corpus", command="attnlab tour --only core",
                    seed=seed, config={"heldout_fraction": 0.2})
    with rec.timed("corpus_split"):
        parts = split_builtin(0.2)
    env = rec.env
    rec.add_table("Environment", ["item", "value"],
                  [["python", env["python"]], ["platform", env["platform"]], ["cpu cores", env["cpu_count"]],
                   ["torch threads", env["torch_threads"]], ["CUDA device", env["cuda"] or "none"],
                   ["git commit", env["git_commit"] or "not a checkout"]]
                  + [[name, version] for name, version in env["versions"].items() if version])
    rows = []
    for split, docs in parts.items():
        lengths = sorted(len(d) for d in docs)
        rows.append([split, len(docs), sum(lengths), lengths[len(lengths) // 2], lengths[-1]])
        rec.metrics[f"{split}_documents"] = len(docs)
        rec.metrics[f"{split}_characters"] = sum(lengths)
    rec.add_table("Built-in corpus (pydoc_data.topics), split by a hash of each topic name",
                  ["split", "documents", "characters", "median chars/doc", "max chars/doc"], rows)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for split, docs in parts.items():
        ax.hist([len(d) for d in docs], bins=30, alpha=0.6, label=f"{split} ({len(docs)} docs)", log=True)
    ax.set_xlabel("characters per document")
    ax.set_ylabel("documents")
    ax.legend()
    ax.set_title("Built-in corpus: document lengths per split")
    rec.add_figure(save_figure(fig, out_dir / "corpus_lengths.png").resolve(),
                   "Document lengths of the calibration and held-out parts of the built-in corpus.")
    return rec


def tour_functions(only: list[str] | None = None) -> list[tuple[str, TourFn | None]]:
    """(name, tour function) for ``core`` and each installed module, in order; a module whose import
    fails gets None (and is reported as failed)."""
    names = ["core"] + available_modules()
    if only:
        unknown = [m for m in only if m not in names]
        if unknown:
            raise AttnlabError(f"unknown or not installed module(s): {', '.join(unknown)} (available: {', '.join(names)})")
        names = [n for n in names if n in only]
    out: list[tuple[str, TourFn | None]] = []
    for name in names:
        if name == "core":
            out.append((name, core_tour))
            continue
        try:
            out.append((name, importlib.import_module(f"attnlab.{name}").tour))
        except Exception:  # recorded below as a failed step, never hidden
            out.append((name, None))
    return out


def _failed(name: str, seed: int, error: str) -> RunRecord:
    return RunRecord(name=name, title=f"{name}: tour failed", command=f"attnlab tour --only {name}", seed=seed,
                     status="failed", error=error)


def run_tour(out: str | Path = "report", seed: int = 0, only: list[str] | None = None) -> dict[str, Any]:
    """Run the tour steps, save each record under ``out/<name>/record.json`` and write ``out/index.html``."""
    out = Path(out)
    steps = tour_functions(only)
    records: list[tuple[Path, RunRecord]] = []
    for i, (name, fn) in enumerate(steps, 1):
        step_dir = out / name
        step_dir.mkdir(parents=True, exist_ok=True)
        print(f"[{i}/{len(steps)}] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            if fn is None:
                importlib.import_module(f"attnlab.{name}")  # re-raise the import error for the record
                raise AttributeError(f"attnlab.{name} has no tour()")
            rec = fn(step_dir, seed)
        except Exception as e:
            rec = _failed(name, seed, "".join(traceback.format_exception_only(type(e), e)).strip()
                          + "\n\n" + traceback.format_exc(limit=-3))
        rec.timings.setdefault("tour_total", round(time.perf_counter() - t0, 3))
        path = rec.save(step_dir / "record.json")
        records.append((path, rec))
        print(f"[{i}/{len(steps)}] {name}: {rec.status} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    report = write_report(records, out, title="attnlab tour")
    return {"report": str(report), "records": [str(p) for p, _ in records],
            "status": {r.name: r.status for _, r in records}, "summary": render_markdown(records)}
