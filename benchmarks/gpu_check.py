"""GPU check: every module's device path on one CUDA device, in under 5 minutes; the outcome of each step
(exit code, wall seconds, the command's JSON result) goes to benchmarks/results/gpu_check.json.

    python benchmarks/gpu_check.py [--device cuda:0] [--work DIR] [--list]

Steps, each an ``attnlab`` command run with ``--device DEVICE --json --quiet``:
  nbl collect, apply (8 layers, CCA) and bench on SmolLM2-135M in bfloat16;
  a memorize search in bfloat16;
  a depth sweep of 4 models trained at once on the one GPU (4 worker processes, a quarter GPU each),
  and the same grid as Ray tasks when Ray is installed;
  a synthetic detection set and one epoch of DETR + DAC with --amp.
A failed step is recorded and the next one runs. On a machine without CUDA the script says so in one line and
exits 2, writing nothing; ``--list`` prints the commands (no GPU needed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment

RESULTS = Path(__file__).parent / "results" / "gpu_check.json"
MODEL = "smollm2"
#: 1 budget x 4 depths x 1 seed: four small models, one per worker, trained at once on the one GPU.
DEPTH_CONFIG = {"budgets": [200000], "depths": [1, 2, 4, 8], "seeds": [0], "tokens": 2_000_000,
                "batch_size": 64, "seq_len": 128, "eval_tokens": 65536, "dtype": "bfloat16", "workers": 4}


def steps(work: Path, ray: bool) -> list[tuple[str, list[str]]]:
    """(name, attnlab argv without the device flags) for every step, in order."""
    stats, nbl = str(work / "stats"), str(work / "smollm2-nbl8")
    calib = ["--dtype", "bfloat16", "--tokens", "65536", "--seq-len", "512", "--batch-size", "16"]
    out = [
        ("nbl collect", ["nbl", "collect", MODEL, *calib, "-o", stats]),
        ("nbl apply", ["nbl", "apply", MODEL, *calib, "--stats", stats, "--layers", "8", "--selector", "cca",
                       "-o", nbl]),
        ("nbl bench", ["nbl", "bench", nbl, "--against", MODEL, "--dtype", "bfloat16", "--repeats", "3"]),
        ("memorize search", ["memorize", "search", "--n-pairs", "256", "--seq-len", "16", "--d-model", "128",
                             "--dtype", "bfloat16"]),
        ("depth sweep, 4 workers", ["depth", "sweep", str(work / "depth.yaml"), "-o", str(work / "depth")]),
    ]
    if ray:
        out.append(("depth sweep, Ray", ["depth", "sweep", str(work / "depth.yaml"), "-o", str(work / "depth-ray"),
                                         "--backend", "ray"]))
    out += [
        ("detr make-data", ["detr", "make-data", "synthetic-digits", "-o", str(work / "digits"), "--n-train", "512",
                            "--n-val", "64"]),
        ("detr train --dac --amp", ["detr", "train", "--data", str(work / "digits"), "--dac", "--amp", "--epochs",
                                    "1", "-o", str(work / "detr")]),
    ]
    return out


def device_argv(name: str, argv: list[str], device: str) -> list[str]:
    """``argv`` with the device flag (make-data runs no model: it takes none) and the output flags."""
    return [*argv, *([] if name == "detr make-data" else ["--device", device]), "--json", "--quiet"]


def run_step(argv: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "attnlab", *argv], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "seconds": round(time.perf_counter() - t0, 1), "error": f"timed out after {timeout}s"}
    row: dict = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    try:
        row["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        row["stdout_tail"] = proc.stdout[-1000:]
    if proc.returncode != 0:
        row["stderr_tail"] = proc.stderr[-2000:]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="the CUDA device to check (default cuda)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--step-timeout", type=float, default=240.0, help="seconds before a step is stopped")
    p.add_argument("--list", action="store_true", help="print the steps' commands and exit")
    args = p.parse_args(argv)
    try:
        import ray  # noqa: F401

        has_ray = True
    except ImportError:
        has_ray = False
    work = Path(args.work or tempfile.mkdtemp(prefix="attnlab-gpu-check-"))
    plan = [(name, device_argv(name, a, args.device)) for name, a in steps(work, has_ray)]
    if args.list:
        for name, a in plan:
            print(f"{name}: attnlab {' '.join(a)}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: needs a CUDA GPU and torch sees none (run it on a machine with one; --list shows the "
              "steps)", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    import yaml

    (work / "depth.yaml").write_text(yaml.safe_dump(DEPTH_CONFIG), encoding="utf-8")
    t0 = time.perf_counter()
    rows = []
    for name, a in plan:
        row = {"step": name, "command": "attnlab " + " ".join(a), **run_step(a, args.step_timeout)}
        print(f"{name:<28} rc={row['rc']} {row['seconds']:>7.1f}s", flush=True)
        rows.append(row)
    total = round(time.perf_counter() - t0, 1)
    atomic_write_json(RESULTS, {"device": torch.cuda.get_device_name(args.device), "total_seconds": total,
                                "passed": sum(r["rc"] == 0 for r in rows), "steps": rows,
                                "ray": has_ray, "environment": environment()})
    print(f"{sum(r['rc'] == 0 for r in rows)}/{len(rows)} steps passed in {total:.0f}s; {RESULTS}")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
