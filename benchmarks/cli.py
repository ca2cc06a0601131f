"""CLI start-up benchmark: how long `attnlab --help` and the model-free commands take, beside a bare
Python start-up and a bare `import torch` measured in the same run (interleaved, repeated, median).
Results in benchmarks/results/cli.json.

    python benchmarks/cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment

RESULTS = Path(__file__).parent / "results"

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "attnlab --help": [sys.executable, "-m", "attnlab", "--help"],
    "attnlab nbl apply --help": [sys.executable, "-m", "attnlab", "nbl", "apply", "--help"],
    "attnlab machines run bb4": [sys.executable, "-m", "attnlab", "machines", "run", "bb4"],
    "attnlab depth plan --params 1.3B": [sys.executable, "-m", "attnlab", "depth", "plan", "--params", "1.3B"],
}


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv`` (CPU: user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for name, argv in CASES.items():  # warm the file cache once
        timed(argv)
    for _ in range(args.repeats):  # interleaved: every case once per round
        for name, argv in CASES.items():
            runs[name].append(timed(argv))
    base = statistics.median(w for w, _ in runs["python -c pass"])
    rows = []
    print(f"{'command':<36} {'wall median (s)':>16} {'spread (s)':>11} {'CPU median (s)':>15} {'x python':>9}")
    for name, samples in runs.items():
        walls = [w for w, _ in samples]
        wall, cpu = statistics.median(walls), statistics.median(c for _, c in samples)
        rows.append({"command": name, "wall_median_s": wall, "wall_min_s": min(walls), "wall_max_s": max(walls),
                     "cpu_median_s": cpu, "ratio_to_python": wall / base})
        print(f"{name:<36} {wall:>16.3f} {max(walls) - min(walls):>11.3f} {cpu:>15.3f} {wall / base:>9.1f}")
    atomic_write_json(RESULTS / "cli.json", {"benchmark": "cli startup", "repeats": args.repeats, "rows": rows,
                                             "env": environment()})


if __name__ == "__main__":
    main()
