"""The lr check of the 0.5M slope run (issue 18, item 3): held-out loss by depth at each peak lr, the best lr per
depth, and the best depth at each lr and under the best lr per depth (so "L* = 1" is not an lr artifact, or is).

Reads the result lines of the slope run (``slope_cpu/results.jsonl``, peak lr 0.003) and of the lr check's sweeps
(``lr_check/lr<LR>/results.jsonl``, from ``attnlab depth sweep configs/depth/slope_cpu_lr<LR>.yaml``), seed 0 only
unless --seed; and the slope run's own models retrained on another CPU (``lr_check/rerun/``, from ``attnlab depth
sweep configs/depth/slope_cpu.yaml --limit 2``) beside the originals. Run: python docs/results/depth/lr_check.py
[--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent


def losses(seed: int) -> dict[float, dict[int, float]]:
    """``{peak lr: {depth: held-out loss}}`` of every result line of ``seed`` found."""
    out: dict[float, dict[int, float]] = {}
    for path in [HERE / "slope_cpu" / "results.jsonl", *sorted(HERE.glob("lr_check/lr*/results.jsonl"))]:
        config = json.loads((path.parent / "config.json").read_text(encoding="utf-8"))
        lr = float(config.get("config", config)["lr"])
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["seed"] == seed:
                out.setdefault(lr, {})[row["depth"]] = row["heldout_loss"]
    return dict(sorted(out.items()))


def rerun() -> list[tuple[str, float, float]]:
    """``(key, original held-out loss, rerun's)`` for every model of ``lr_check/rerun`` (none when absent)."""
    path = HERE / "lr_check" / "rerun" / "results.jsonl"
    if not path.exists():
        return []
    original = {json.loads(line)["key"]: json.loads(line)["heldout_loss"]
                for line in (HERE / "slope_cpu" / "results.jsonl").read_text(encoding="utf-8").splitlines()}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(r["key"], original[r["key"]], r["heldout_loss"]) for r in rows]


def table(by_lr: dict[float, dict[int, float]]) -> dict:
    depths = sorted({d for row in by_lr.values() for d in row})
    best_lr = {d: min((lr for lr in by_lr if d in by_lr[lr]), key=lambda lr: by_lr[lr][d]) for d in depths}
    best = {d: by_lr[best_lr[d]][d] for d in depths}
    return {"depths": depths, "loss": {str(lr): row for lr, row in by_lr.items()}, "best_lr": best_lr,
            "best_loss": best, "best_depth_at_lr": {str(lr): min(row, key=row.get) for lr, row in by_lr.items()},
            "best_depth_at_best_lr": min(best, key=best.get)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t = table(losses(args.seed))
    again = rerun()
    if args.json:
        print(json.dumps({**t, "rerun": again}, indent=1))
        return
    lrs = list(t["loss"])
    print("| depth | " + " | ".join(f"lr {lr}" for lr in lrs) + " | best lr |")
    print("|---|" + "---|" * (len(lrs) + 1))
    for d in t["depths"]:
        cells = [f"{t['loss'][lr][d]:.4f}" if d in t["loss"][lr] else "-" for lr in lrs]
        print(f"| {d} | " + " | ".join(cells) + f" | {t['best_lr'][d]} |")
    print(f"\nbest depth at each lr: {t['best_depth_at_lr']}; "
          f"with the best lr per depth: {t['best_depth_at_best_lr']}")
    for key, first, second in again:
        print(f"retrained on another CPU: {key} {first:.9f} -> {second:.9f} ({second - first:+.2e})")


if __name__ == "__main__":
    main()
