"""Baseline vs DAC at equal epochs over several seeds: resumable runs, a summary table at 25/50/75/100% of
the budget (mean, sample sd, min-max), the queries-per-object diagnostic, and AP-over-training curves.

The runs are a grid of :mod:`attnlab.core.grid` (one job per variant and seed, logged to ``runs.jsonl``), so
they run in worker processes or on Ray, and several processes can share one comparison folder. A folder
written before the log existed still resumes: its finished runs are recognised from their checkpoints and
logged without retraining. The summary reads every run's history from its checkpoint."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_write_json, atomic_write_text
from ..core.errors import AttnlabError
from ..core.grid import NUMBER, GridLog, Job, run_grid
from ..core.outputs import MARKER, run_dir
from ..core.plots import plt, save_figure
from ..core.records import RunRecord
from ..core.runtime import choose_device
from ..core.stats import mean_t_interval
from .evaluate import QUALITY_THRESHOLDS
from .train import (
    CHECKPOINT,
    TrainConfig,
    open_data,
    read_checkpoint,
    reproducing_command,
    require_amp_device,
    train,
    with_defaults,
)
from .variants import VARIANTS


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def variant_config(base: TrainConfig, variant: str, seed: int) -> TrainConfig:
    """``base`` with the variant's model options (:data:`~attnlab.detr.variants.VARIANTS`) and ``seed``."""
    return TrainConfig(**{**base.to_dict(), "seed": seed, "model": {**base.model, **VARIANTS[variant]}})


#: The log of a comparison: one row per finished run (its final-epoch metrics), keyed by :func:`run_name`.
LOG = "runs.jsonl"
KEY = "run"
ROW_FIELDS = {"variant": str, "seed": int, "epochs": int, "AP": NUMBER, "AP50": NUMBER, "AP75": NUMBER,
              "seconds_per_step": NUMBER}


def comparison_log(out: Path) -> GridLog:
    """The comparison's :class:`~attnlab.core.grid.GridLog` (``runs.jsonl``, key ``run``)."""
    return GridLog(out / LOG, "detr comparison", key=KEY, fields=ROW_FIELDS)


def step_seconds(history: list[dict[str, Any]]) -> float:
    """A run's median training seconds per step over its epochs."""
    return statistics.median(h["seconds_per_step"] for h in history)


def _row(variant: str, seed: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    final = history[-1]
    return {"variant": variant, "seed": seed, "epochs": final["epoch"], "AP": final["AP"], "AP50": final["AP50"],
            "AP75": final["AP75"], "seconds_per_step": step_seconds(history)}


def train_run(args: Mapping[str, Any]) -> dict[str, Any]:
    """The grid job of one (variant, seed): train (or resume) the run into ``args["out"]`` and return its
    final-epoch row. A run whose checkpoint already holds every epoch (a comparison folder written before
    ``runs.jsonl`` existed) is not retrained: its row comes from the checkpoint."""
    cfg, out = TrainConfig(**args["config"]), Path(args["out"])
    ckpt = out / CHECKPOINT
    state = read_checkpoint(ckpt)[1] if ckpt.is_file() else {"epoch": 0}
    if state["epoch"] < cfg.epochs:
        state = train(cfg, out, progress=args["epoch_bars"], quiet=args["quiet"])
    return _row(args["variant"], cfg.seed, state["history"])


def _marker_base(out: Path, base: dict[str, Any]) -> dict[str, Any]:
    """The folder marker's base config when it is ``base`` once options added since are filled in at their
    defaults (a comparison saved before an option existed resumes), else ``base``."""
    try:
        saved = json.loads((out / MARKER).read_text(encoding="utf-8"))["config"]["base"]
    except (OSError, ValueError, KeyError, TypeError):
        return base
    same = isinstance(saved, dict) and json.dumps(with_defaults(saved), sort_keys=True, default=str) == \
        json.dumps(base, sort_keys=True, default=str)
    return saved if same else base


def run_compare(base: TrainConfig, out_dir: str | Path, seeds: list[int], workers: int = 1, threads: int = 1,
                backend: str = "local", ray_address: str | None = None, progress: bool = True, quiet: bool = False,
                overwrite: bool = False) -> dict[str, Any]:
    """Train every variant of :data:`~attnlab.detr.variants.VARIANTS` (same config, its model options
    applied) for each seed into ``out_dir``, one :func:`~attnlab.core.grid.run_grid` job per run
    (``workers`` processes here, or Ray tasks with ``backend="ray"``; ``threads`` each, half a GPU each on
    CUDA). Finished runs are skipped, interrupted ones resume from their checkpoints. The folder is a
    resumable run of ``base`` (its seed aside): rerunning with more seeds adds them; another ``base`` is
    refused unless ``overwrite``. Each run's final row goes to ``runs.jsonl``; the summary is rewritten
    after every finished run."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AttnlabError(f"{out} is a file, not a folder (choose another -o)")
    open_data(base)                    # bad data is refused before the folder becomes a comparison of it
    device = choose_device(base.device)
    require_amp_device(base.amp, device)
    gpus = 0.5 if device.startswith("cuda") else 0.0
    key = {k: v for k, v in base.result_keys().items() if k != "seed"}
    _, resuming = run_dir(out, {"base": _marker_base(out, with_defaults(key))}, overwrite, what="detr comparison",
                          quiet=quiet)
    if resuming and (out / "compare.json").is_file():
        seeds = sorted(set(seeds) | set(json.loads((out / "compare.json").read_text(encoding="utf-8"))["seeds"]))
    base = TrainConfig(**{**base.to_dict(), "seed": seeds[0]})
    atomic_write_json(out / "compare.json", {"base": base.to_dict(), "seeds": seeds, "variants": list(VARIANTS)})
    epoch_bars = progress and backend == "local" and workers == 1  # nested bars only in this process
    jobs = [Job(run_name(v, seed), {"variant": v, "config": variant_config(base, v, seed).to_dict(),
                                    "out": str(out / run_name(v, seed)), "epoch_bars": epoch_bars, "quiet": quiet},
                cpus=threads, gpus=gpus)
            for seed in seeds for v in VARIANTS]
    run_grid(train_run, jobs, comparison_log(out), workers=workers, threads=threads, backend=backend,
             ray_address=ray_address, progress=progress, quiet=quiet, desc="detr compare", unit="run",
             postfix=lambda row: f"{row[KEY]}: AP {row['AP']:.3f}", on_result=lambda row: summarize(out),
             device=device)
    return summarize(out)


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


def fmt(s: dict[str, Any] | None, digits: int = 3) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def summarize(out_dir: str | Path) -> dict[str, Any]:
    """Read every run's history from its checkpoint and write summary.json, summary.md and curves.png."""
    out = Path(out_dir)
    meta_path = out / "compare.json"
    if not meta_path.is_file():
        raise AttnlabError(f"{out} is not a compare directory (no compare.json; run `attnlab detr compare` first)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    base = TrainConfig(**meta["base"])
    epochs = base.epochs
    histories: dict[str, dict[int, list[dict[str, Any]]]] = {v: {} for v in VARIANTS}
    for v in VARIANTS:
        for seed in meta["seeds"]:
            ckpt = out / run_name(v, seed) / CHECKPOINT
            if ckpt.is_file():
                histories[v][seed] = read_checkpoint(ckpt)[1]["history"]
    summary = {"epochs": epochs, "seeds": meta["seeds"], **budget_table(histories, epochs),
               "paired": paired_table(histories, epochs), "take_off": take_off_table(histories, epochs),
               "runs_done": {v: sorted(s for s, h in histories[v].items() if h and h[-1]["epoch"] == epochs)
                             for v in VARIANTS},
               "base": meta["base"]}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", render_markdown(summary))
    if any(histories.values()):
        plot_curves(histories, out / "curves.png", epochs)
    compare_record(summary, out).save(out / "record.json")
    return summary


def budget_points(epochs: int) -> list[tuple[str, int]]:
    """The summary's budget points: (label, epoch) at 25/50/75/100% of ``epochs``."""
    return [(f"{int(f * 100)}%", max(1, math.ceil(epochs * f))) for f in (0.25, 0.5, 0.75, 1.0)]


def budget_table(histories: dict[str, dict[int, list[dict[str, Any]]]], epochs: int) -> dict[str, Any]:
    """``table``: per budget point (25/50/75/100% of ``epochs``) and variant, AP, AP50, AP75 and queries per
    object over the seeds evaluated there; ``seconds_per_step``: each run's median, over runs. ``histories``
    maps a variant name to ``{seed: training history}``."""
    table: list[dict[str, Any]] = []
    for label, ep in budget_points(epochs):
        for v, runs in histories.items():
            rows = [next((h for h in hist if h["epoch"] == ep), None) for hist in runs.values()]
            rows = [r for r in rows if r is not None and r.get("AP") is not None]
            if not rows:
                continue
            entry = {"budget": label, "epoch": ep, "step": rows[0]["step"], "variant": v, "seeds": len(rows)}
            for k in ("AP", "AP50", "AP75", *(f"queries_per_object@{t}" for t in QUALITY_THRESHOLDS)):
                entry[k] = _stats([float(r[k]) for r in rows])
            table.append(entry)
    speed = {v: _stats([step_seconds(hist) for hist in runs.values()])
             for v, runs in histories.items() if runs}
    return {"table": table, "seconds_per_step": speed}


def paired_t_interval(diffs: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of paired differences with its Student t interval (:func:`attnlab.core.stats.mean_t_interval`), and the
    differences themselves."""
    return {**mean_t_interval(diffs, level), "diffs": diffs}


#: The metrics whose paired difference DAC - baseline the summary reports.
PAIRED_METRICS = ("AP", "AP50")


def paired_table(histories: dict[str, dict[int, list[dict[str, Any]]]], epochs: int,
                 points: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Per budget point (``points``: (label, epoch); default :func:`budget_points`), DAC - baseline in AP and
    AP50 over the seeds both evaluated there (same seed, so same initialisation and data order: the pairs),
    with :func:`paired_t_interval`'s 95% interval."""
    base, dac = histories.get("baseline", {}), histories.get("dac", {})
    rows = []
    for label, ep in points or budget_points(epochs):
        pairs = []
        for seed in sorted(set(base) & set(dac)):
            b, d = (next((h for h in hist[seed] if h["epoch"] == ep and h.get("AP") is not None), None)
                    for hist in (base, dac))
            if b is not None and d is not None:
                pairs.append((seed, b, d))
        if pairs:
            rows.append({"budget": label, "epoch": ep, "seeds": [s for s, _, _ in pairs],
                         **{k: paired_t_interval([float(d[k]) - float(b[k]) for _, b, d in pairs])
                            for k in PAIRED_METRICS}})
    return rows


#: Take-off: the first evaluated step at which a run reaches this fraction of its seed's baseline final AP.
TAKE_OFF_FRACTION = 0.5


def first_step_reaching(history: list[dict[str, Any]], ap: float) -> int | None:
    """The first evaluated step of ``history`` with AP >= ``ap`` (None when no evaluation reaches it)."""
    return next((h["step"] for h in history if h.get("AP") is not None and h["AP"] >= ap), None)


def take_off_table(histories: dict[str, dict[int, list[dict[str, Any]]]], epochs: int) -> dict[str, Any] | None:
    """Steps to take off, per seed whose baseline and DAC runs both finished: the first evaluated step at which
    each reaches :data:`TAKE_OFF_FRACTION` of that seed's baseline final AP, and DAC - baseline in steps with
    its 95% t interval over the seeds where both got there (a DAC run that never does is counted apart)."""
    base, dac = histories.get("baseline", {}), histories.get("dac", {})
    done = [s for s in sorted(set(base) & set(dac)) if base[s][-1]["epoch"] == dac[s][-1]["epoch"] == epochs]
    if not done:
        return None
    runs = []
    for seed in done:
        level = TAKE_OFF_FRACTION * float(base[seed][-1]["AP"])
        runs.append({"seed": seed, "AP": level, "baseline": first_step_reaching(base[seed], level),
                     "dac": first_step_reaching(dac[seed], level)})
    both = [r for r in runs if r["dac"] is not None and r["baseline"] is not None]
    return {"fraction": TAKE_OFF_FRACTION, "runs": runs, "dac_never": [r["seed"] for r in runs if r["dac"] is None],
            "paired": paired_t_interval([float(r["dac"] - r["baseline"]) for r in both]) if both else None}


def fmt_paired(p: dict[str, Any], digits: int = 3) -> str:
    """``+0.012 [-0.030, +0.054]``: the mean paired difference and its interval (no interval below 2 seeds)."""
    if p["low"] is None:
        return f"{p['mean']:+.{digits}f}"
    return f"{p['mean']:+.{digits}f} [{p['low']:+.{digits}f}, {p['high']:+.{digits}f}]"


def compare_record(summary: dict[str, Any], out: Path) -> RunRecord:
    base = TrainConfig(**summary["base"])
    seeds = summary["seeds"]
    rec = RunRecord(name="detr-compare", title="detr: baseline vs DAC at equal epochs", command="", seed=seeds[0],
                    config=summary["base"])
    rec.command = reproducing_command("attnlab detr compare", base, rec, ["--seeds", str(len(seeds)), "-o", str(out)])
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        rec.notes.append(f"Seeds {seeds} were added by several invocations; each ran the command with its own "
                         "--seed and --seeds.")
    rec.add_table("COCO AP on val, mean ± sd [min–max] over seeds",
                  ["budget", "step", "variant", "seeds", "AP", "AP50", "AP75"],
                  [[r["budget"], r["step"], r["variant"], r["seeds"], fmt(r["AP"]), fmt(r["AP50"]), fmt(r["AP75"])]
                   for r in summary["table"]])
    rec.add_table("Queries per object with quality above t (O-decoder, val)",
                  ["budget", "variant", "t=0.6", "t=0.7", "t=0.8"],
                  [[r["budget"], r["variant"]] + [fmt(r[f"queries_per_object@{t}"], 2) for t in QUALITY_THRESHOLDS]
                   for r in summary["table"]])
    if summary.get("paired"):
        rec.add_table("DAC - baseline, paired by seed: mean [95% t interval]",
                      ["budget", "step", "seeds", "AP", "AP50"], paired_rows(summary))
    if summary.get("take_off"):
        rec.add_table(take_off_title(summary["take_off"]), ["seed", "AP level", "baseline step", "DAC step"],
                      take_off_rows(summary["take_off"]))
    for r in summary["table"]:
        if r["budget"] == "100%":
            rec.metrics[f"{r['variant']}_AP_mean"] = round(r["AP"]["mean"], 4)
    if (out / "curves.png").is_file():
        rec.add_figure((out / "curves.png").resolve(), "AP, AP50 and AP75 on val over training, one line per seed.")
    return rec


def paired_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """The paired table's rows: budget, step, number of pairs, AP and AP50 as :func:`fmt_paired`."""
    steps = {r["epoch"]: r["step"] for r in summary["table"]}
    return [[p["budget"], steps.get(p["epoch"], "-"), len(p["seeds"]), *(fmt_paired(p[k]) for k in PAIRED_METRICS)]
            for p in summary["paired"]]


def take_off_title(t: dict[str, Any]) -> str:
    paired = f": DAC - baseline {fmt_paired(t['paired'], 0)} steps" if t["paired"] else ""
    return (f"Steps to take off (first evaluation at {t['fraction']:g} x the seed's baseline final AP){paired}"
            + (f"; DAC never reached it for seeds {t['dac_never']}" if t["dac_never"] else ""))


def take_off_rows(t: dict[str, Any]) -> list[list[Any]]:
    return [[r["seed"], f"{r['AP']:.3f}", r["baseline"], "never" if r["dac"] is None else r["dac"]] for r in t["runs"]]


def render_markdown(summary: dict[str, Any]) -> str:
    lines = ["| budget | step | variant | seeds | AP | AP50 | AP75 |", "|---|---|---|---|---|---|---|"]
    for r in summary["table"]:
        lines.append(f"| {r['budget']} | {r['step']} | {r['variant']} | {r['seeds']} | {fmt(r['AP'])} | "
                     f"{fmt(r['AP50'])} | {fmt(r['AP75'])} |")
    lines += ["", "Queries per object with quality (0.3 score + 0.7 IoU) above t, O-decoder, val set:", "",
              "| budget | variant | t=0.6 | t=0.7 | t=0.8 |", "|---|---|---|---|---|"]
    for r in summary["table"]:
        lines.append(f"| {r['budget']} | {r['variant']} | " + " | ".join(
            fmt(r[f"queries_per_object@{t}"], 2) for t in QUALITY_THRESHOLDS) + " |")
    if summary.get("paired"):
        lines += ["", "DAC - baseline, paired by seed (same initialisation and data order): mean difference "
                      "[95% Student t interval over the seeds' differences]:", "",
                  "| budget | step | seeds | AP | AP50 |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(map(str, row)) + " |" for row in paired_rows(summary)]
    if summary.get("take_off"):
        t = summary["take_off"]
        lines += ["", take_off_title(t) + ":", "", "| seed | AP level | baseline step | DAC step |",
                  "|---|---|---|---|"]
        lines += ["| " + " | ".join(map(str, row)) + " |" for row in take_off_rows(t)]
    sp = summary["seconds_per_step"]
    if "baseline" in sp and "dac" in sp:
        lines += ["", "Training seconds per step (median per run, mean over runs): "
                      f"baseline {sp['baseline']['mean']:.3f}, "
                      f"DAC {sp['dac']['mean']:.3f} (x{sp['dac']['mean'] / sp['baseline']['mean']:.2f})."]
    return "\n".join(lines) + "\n"


def plot_curves(histories: dict[str, dict[int, list[dict[str, Any]]]], path: Path, epochs: int,
                title: str = "baseline vs DAC") -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colors = {"baseline": "tab:blue", "dac": "tab:red"}
    others = iter(("tab:green", "tab:purple", "tab:orange", "tab:brown"))
    for v in histories:
        colors.setdefault(v, next(others))
    for ax, key in zip(axes, ("AP", "AP50", "AP75"), strict=True):
        for v, runs in histories.items():
            for i, hist in enumerate(runs.values()):
                pts = [(h["step"], h[key]) for h in hist if h.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color=colors[v], alpha=0.8, lw=1.2,
                            label=("DAC" if v == "dac" else v) if i == 0 else None)
        ax.set_xlabel("training step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("COCO metric on val")
    axes[0].legend()
    fig.suptitle(f"{title}, one line per seed ({epochs} epochs)")
    return save_figure(fig, path)
