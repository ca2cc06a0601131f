"""DAC - baseline paired by seed, from the per-run ``log.jsonl`` files a `detr compare` folder keeps (so a
committed results folder without checkpoints): AP and AP50 at the given epochs, mean difference and 95%
Student t interval over the seeds (`attnlab.detr.compare.paired_table`).

Run: python docs/results/detr/paired.py docs/results/detr/compare24 --epochs 4,8,12,16 [--json]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--epochs", required=True, help="comma-separated epochs, e.g. 4,8,12,16")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    eps = [int(e) for e in args.epochs.split(",")]
    rows = paired_table(histories(args.folder), max(eps), [(f"epoch {e}", e) for e in eps])
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| epoch | seeds | AP | AP50 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['epoch']} | {len(r['seeds'])} | {fmt_paired(r['AP'])} | {fmt_paired(r['AP50'])} |")


if __name__ == "__main__":
    main()
