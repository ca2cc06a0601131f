"""DAC - baseline paired by seed, from the per-run ``log.jsonl`` files a `detr compare` folder keeps (so a
committed results folder without checkpoints): AP and AP50 at the given epochs, mean difference and 95%
Student t interval over the seeds (`attnlab.detr.compare.paired_table`).

Run: python docs/results/detr/paired.py docs/results/detr/compare24 --epochs 4,8,12,16 [--json] [--per-run]
(--per-run: each run's AP and AP50 at those epochs instead, "-" where a run has not evaluated it)
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from attnlab.detr.compare import fmt_paired, paired_table


def histories(folder: Path) -> dict[str, dict[int, list[dict]]]:
    """``{variant: {seed: log rows}}`` from ``folder/<variant>-seed<N>/log.jsonl``."""
    out: dict[str, dict[int, list[dict]]] = {}
    for log in sorted(folder.glob("*-seed*/log.jsonl")):
        match = re.fullmatch(r"(.+)-seed(\d+)", log.parent.name)
        if match:
            rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
            out.setdefault(match[1], {})[int(match[2])] = rows
    if not out:
        raise SystemExit(f"{folder}: no <variant>-seed<N>/log.jsonl (give a `detr compare` folder)")
    return out


def print_per_run(runs: dict[str, dict[int, list[dict]]], eps: list[int]) -> None:
    """A markdown table: one row per epoch, one ``AP / AP50`` column per run."""
    names = [(v, seed) for v in runs for seed in sorted(runs[v])]
    print("| epoch | " + " | ".join(f"{v} seed {seed}" for v, seed in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for e in eps:
        cells = []
        for v, seed in names:
            row = next((h for h in runs[v][seed] if h["epoch"] == e and h.get("AP") is not None), None)
            cells.append("-" if row is None else f"{row['AP']:.3f} / {row['AP50']:.3f}")
        print(f"| {e} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--epochs", required=True, help="comma-separated epochs, e.g. 4,8,12,16")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--per-run", action="store_true", help="each run's AP / AP50 at the epochs")
    args = ap.parse_args()
    eps = [int(e) for e in args.epochs.split(",")]
    runs = histories(args.folder)
    if args.per_run:
        print_per_run(runs, eps)
        return
    rows = paired_table(runs, max(eps), [(f"epoch {e}", e) for e in eps])
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| epoch | seeds | AP | AP50 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['epoch']} | {len(r['seeds'])} | {fmt_paired(r['AP'])} | {fmt_paired(r['AP50'])} |")


if __name__ == "__main__":
    main()
