"""A benchmark where DAC can matter (issue 15, item 5): crowded scenes (many overlapping objects, ~10 queries
per object), 6 decoder layers, multi-scale deformable cross-attention, and baseline vs DAC paired by seed (same
initialisation, same data order) in two comparisons: today's DAC, and the released code's choices
(``--official-dac``, which also gives the baseline look-forward-twice). Each comparison is one resumable
``attnlab detr compare`` folder; this script writes the dataset once, runs (or resumes) both, and puts their
paired differences, steps to take off and queries per object side by side in ``OUT/benchmark.md`` and
``benchmarks/results/detr_dac_<preset>.json``.

Presets: ``cpu`` (96 px, 4-15 digits with IoU up to 0.3, 100 queries, d 64, 2+6 layers, strides 8/16,
2,000 steps of batch 8; about 10 and 20 CPU-minutes per baseline and DAC run on one thread) and ``gpu``
(256 px, 10-30 objects, 300 queries, d 256, 6+6 layers, 4 levels, deformable encoder, bfloat16, 6 runs at once
on one GPU; the recipe ``benchmarks/detr_gpu.py`` runs).

Run: python benchmarks/detr_dac.py --preset cpu [--seeds 5] [--jobs 2] [--out runs/detr-dac-cpu]
(rerun the same line to resume; several processes may share OUT, each comparison's claims keep runs apart).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from attnlab.core.atomic import atomic_write_json, atomic_write_text
from attnlab.core.runtime import environment
from attnlab.detr.compare import fmt_paired

#: Per preset: make-data flags, model/training flags shared by both comparisons, and runtime flags.
PRESETS = {
    "cpu": {
        "data": ["synthetic-digits", "--n-train", "2000", "--n-val", "300", "--image-size", "96",
                 "--min-objects", "4", "--max-objects", "15", "--min-size", "12", "--max-size", "28",
                 "--max-overlap", "0.3"],
        "train": ["--image-size", "96", "--batch-size", "8", "--epochs", "8", "--eval-every", "1",
                  "--queries", "100", "--enc-layers", "2", "--dec-layers", "6", "--d-model", "64",
                  "--backbone-channels", "32,64,96,128", "--deformable-levels", "2"],
        "runtime": ["--device", "cpu", "--threads", "1"],
    },
    "gpu": {
        "data": ["synthetic-digits", "--n-train", "6000", "--n-val", "500", "--image-size", "256",
                 "--min-objects", "10", "--max-objects", "30", "--min-size", "16", "--max-size", "48",
                 "--max-overlap", "0.3"],
        "train": ["--image-size", "256", "--batch-size", "16", "--epochs", "12", "--eval-every", "2",
                  "--queries", "300", "--enc-layers", "6", "--dec-layers", "6", "--d-model", "256", "--heads", "8",
                  "--ffn-dim", "1024", "--backbone-channels", "32,64,128,256,256", "--deformable-levels", "4",
                  "--deformable-encoder", "--lr", "2e-4"],
        "runtime": ["--device", "cuda", "--amp", "--workers", "2"],
    },
}

#: The two comparisons: their folder names under OUT and the extra compare flags.
COMPARISONS = {"dac": [], "official-dac": ["--official-dac"]}


def commands(preset: str, out: Path, seeds: int, jobs: int, only: str | None = None) -> list[list[str]]:
    """The ``attnlab`` argument lists the benchmark runs: the dataset, then each comparison."""
    flags = PRESETS[preset]
    plan = [["detr", "make-data", *flags["data"], "-o", str(out / "data"), "--quiet"]]
    for name, extra in COMPARISONS.items():
        if only in (None, name):
            plan.append(["detr", "compare", "--data", str(out / "data"), *flags["train"], *extra, *flags["runtime"],
                         "--seeds", str(seeds), "--jobs", str(jobs), "-o", str(out / name)])
    return plan


def attnlab(args: list[str]) -> None:
    """Run one ``attnlab`` command in this interpreter's environment; a failure stops the benchmark."""
    print("$ attnlab", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "attnlab", *args], check=True)


def table(out: Path) -> dict:
    """Both comparisons' summaries, side by side."""
    rows = {}
    for name in COMPARISONS:
        path = out / name / "summary.json"
        if path.is_file():
            s = json.loads(path.read_text(encoding="utf-8"))
            final = {r["variant"]: r for r in s["table"] if r["budget"] == "100%"}
            rows[name] = {"runs_done": s["runs_done"], "paired": s["paired"], "take_off": s.get("take_off"),
                          "final": {v: {k: r[k] for k in ("AP", "AP50", "queries_per_object@0.7")}
                                    for v, r in final.items()}}
    return rows


def render(rows: dict) -> str:
    lines = ["| comparison | seeds paired | budget | DAC - baseline AP | AP50 |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        for p in r["paired"]:
            lines.append(f"| {name} | {len(p['seeds'])} | {p['budget']} | {fmt_paired(p['AP'])} | "
                         f"{fmt_paired(p['AP50'])} |")
    lines += ["", "| comparison | variant | final AP (mean ± sd) | queries per object at t=0.7 |", "|---|---|---|---|"]
    for name, r in rows.items():
        for v, f in r["final"].items():
            lines.append(f"| {name} | {v} | {f['AP']['mean']:.3f} ± {f['AP']['sd']:.3f} | "
                         f"{f['queries_per_object@0.7']['mean']:.2f} |")
    lines.append("")
    for name, r in rows.items():
        t = r["take_off"]
        if t and t["paired"]:
            lines.append(f"- {name}: steps to half the seed's baseline final AP, DAC - baseline "
                         f"{fmt_paired(t['paired'], 0)} ({len(t['paired']['diffs'])} seeds; DAC never: "
                         f"{t['dac_never'] or 'none'})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="cpu")
    ap.add_argument("--seeds", type=int, default=5, help="paired seeds per comparison (default 5)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once per comparison (default 1; gpu preset 6)")
    ap.add_argument("--only", choices=COMPARISONS, default=None, help="run one comparison (default both)")
    ap.add_argument("--out", default=None, help="folder of the dataset and both comparisons "
                                                "(default runs/detr-dac-<preset>)")
    args = ap.parse_args(argv)
    out = Path(args.out or f"runs/detr-dac-{args.preset}")
    make_data, *compares = commands(args.preset, out, args.seeds, args.jobs, args.only)
    if not (out / "data" / "annotations").is_dir():
        attnlab(make_data)
    for argv in compares:
        attnlab(argv)
    rows = table(out)
    atomic_write_text(out / "benchmark.md", render(rows))
    result = Path(__file__).parent / "results" / f"detr_dac_{args.preset}.json"
    atomic_write_json(result, {"preset": args.preset, "flags": PRESETS[args.preset], "out": str(out),
                               "comparisons": rows, "environment": environment()})
    print(render(rows), end="")
    print(f"wrote {out / 'benchmark.md'} and {result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
