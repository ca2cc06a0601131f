"""``attnlab tour``: run each installed module's tour in turn and render one report.

Each module has ``attnlab/<module>/tour.py`` with ``tour(out_dir: Path, seed: int, full: bool = False) ->
RunRecord`` (it writes its figures under ``out_dir`` and returns its record) and ``EXPECTED_SECONDS =
{"quick": s, "full": s}`` (measured on a 2-core CPU, printed before the section starts). The quick profile
(the default) shows each paper's effect with real models and data in minutes; ``--full`` runs the long
version. A failing module is recorded as failed (with the error) and the tour goes on. Before the modules
comes ``core``: the environment and the built-in corpus split, which every module that reads text uses.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import available_modules
from .core.errors import AttnlabError
from .core.records import RunRecord
from .core.report import render_markdown, write_report

TourFn = Callable[[Path, int, bool], RunRecord]


def core_tour(out_dir: Path, seed: int = 0, full: bool = False) -> RunRecord:
    """The shared ground: the machine and versions this report ran on, and the built-in corpus split."""
    from .core.plots import plt, save_figure
    from .core.text import split_builtin

    rec = RunRecord(name="core", title="core: environment and built-in corpus", command="attnlab tour --only core",
                    seed=seed, config={"heldout_fraction": 0.2})
    with rec.timed("corpus_split"):
        parts = split_builtin(0.2)
    env = rec.env
    rec.add_table("Environment", ["item", "value"],
                  [["python", env["python"]], ["platform", env["platform"]], ["CPU", env["cpu_model"] or "unknown"],
                   ["cpu cores", env["cpu_count"]],
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


def tour_functions(only: list[str] | None = None) -> list[tuple[str, TourFn | None, dict[str, float]]]:
    """(name, tour function, expected seconds) for ``core`` and each installed module, in order; a module
    whose tour does not import gets None (and is reported as failed)."""
    names = ["core"] + available_modules()
    if only:
        unknown = [m for m in only if m not in names]
        if unknown:
            raise AttnlabError(f"unknown or not installed module(s): {', '.join(unknown)} "
                               f"(available: {', '.join(names)})")
        names = [n for n in names if n in only]
    out: list[tuple[str, TourFn | None, dict[str, float]]] = []
    for name in names:
        if name == "core":
            out.append((name, core_tour, {"quick": 2, "full": 2}))
            continue
        try:
            module = importlib.import_module(f"attnlab.{name}.tour")
            out.append((name, module.tour, dict(getattr(module, "EXPECTED_SECONDS", {}))))
        except Exception:  # recorded below as a failed step, never hidden
            out.append((name, None, {}))
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _failed(name: str, seed: int, error: str) -> RunRecord:
    return RunRecord(name=name, title=f"{name}: tour failed", command=f"attnlab tour --only {name}", seed=seed,
                     status="failed", error=error)


def run_tour(out: str | Path = "report", seed: int = 0, only: list[str] | None = None, full: bool = False,
             overwrite: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run the tour steps, save each record under ``out/<name>/record.json`` and write ``out/index.html``.

    The report folder is built aside and swapped in at the end (:func:`attnlab.core.outputs.artifact_dir`):
    an existing report is refused unless ``overwrite``, and an interrupted tour leaves the old one intact.
    """
    from .core.outputs import artifact_dir

    out = Path(out)
    profile = "full" if full else "quick"
    steps = tour_functions(only)

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    expected = sum(e.get(profile, 0) for _, _, e in steps)
    records: list[tuple[Path, RunRecord]] = []
    with artifact_dir(out, overwrite=overwrite, what="tour report") as tmp:  # checks `out` before any work
        say(f"attnlab tour ({profile} profile): {len(steps)} sections, about {_duration(expected)} on a 2-core CPU")
        for i, (name, fn, exp) in enumerate(steps, 1):
            step_dir = tmp / name
            step_dir.mkdir(parents=True, exist_ok=True)
            about = f" (expected about {_duration(exp[profile])})" if profile in exp else ""
            say(f"[{i}/{len(steps)}] {name}{about} ...")
            t0 = time.perf_counter()
            try:
                if fn is None:
                    importlib.import_module(f"attnlab.{name}.tour")  # re-raise the import error for the record
                    raise AttributeError(f"attnlab.{name}.tour has no tour()")
                rec = fn(step_dir, seed, full)
            except Exception as e:
                rec = _failed(name, seed, "".join(traceback.format_exception_only(type(e), e)).strip()
                              + "\n\n" + traceback.format_exc(limit=-3))
            rec.config.setdefault("profile", profile)
            rec.timings.setdefault("tour_total", round(time.perf_counter() - t0, 3))
            rec.save(step_dir / "record.json")
            records.append((out / name / "record.json", rec))
            say(f"[{i}/{len(steps)}] {name}: {rec.status} ({time.perf_counter() - t0:.1f} s)")
        write_report([(tmp / p.relative_to(out), r) for p, r in records], tmp, title=f"attnlab tour ({profile})")
    return {"report": str(out / "index.html"), "records": [str(p) for p, _ in records], "profile": profile,
            "status": {r.name: r.status for _, r in records}, "summary": render_markdown(records)}
