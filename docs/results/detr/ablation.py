"""Tables and curves for runs grouped by label (e.g. DAC variants trained with `attnlab detr train` beside a
compare's baselines), in the format of `attnlab detr compare`'s summary.

Run: python docs/results/detr/ablation.py OUT "baseline=RUN_DIR..." "DAC top-2=RUN_DIR..." [--title T] [--overwrite]
(each group: label=run directories separated by commas; all runs must have the same number of epochs)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnlab.core.atomic import atomic_write_json, atomic_write_text
from attnlab.core.outputs import artifact_dir
from attnlab.detr.compare import budget_table, plot_curves, render_markdown
from attnlab.detr.train import CHECKPOINT, TrainConfig, read_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("groups", nargs="+", help="label=run,run,...")
    ap.add_argument("--title", default="ablation")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    args = ap.parse_args()
    histories, epochs = {}, set()
    for group in args.groups:
        label, _, runs = group.partition("=")
        histories[label] = {}
        for run in runs.split(","):
            cfg = TrainConfig(**json.loads((Path(run) / "config.json").read_text())["train"])
            epochs.add(cfg.epochs)
            histories[label][cfg.seed] = read_checkpoint(Path(run) / CHECKPOINT)[1]["history"]
    if len(epochs) != 1:
        raise SystemExit(f"runs differ in epochs: {sorted(epochs)}")
    n_epochs = epochs.pop()
    summary = {"epochs": n_epochs, "groups": args.groups, **budget_table(histories, n_epochs)}
    with artifact_dir(args.out, args.overwrite, what="detr ablation") as out:
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", render_markdown(summary))
        plot_curves(histories, out / "curves.png", summary["epochs"], args.title)
    print(render_markdown(summary))


if __name__ == "__main__":
    main()
