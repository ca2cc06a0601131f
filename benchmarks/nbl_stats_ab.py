"""The NBL statistics pass, this tree against an earlier commit's code, side by side (issue 13, target "statistics
pass: no slower per token than today on CPU; peak RAM reported").

Each side runs in its own process (``PYTHONPATH`` = that tree's ``src``; the earlier tree is ``git archive REV``),
loads SmolLM2-135M, and times one fresh statistics pass over the same calibration tokens (builtin:0.1, seq_len 256,
batch 8): wall time, process CPU time and peak RSS of the pass. Rounds alternate which side runs first; the ratio
is of medians. Threads are pinned (``OMP_NUM_THREADS`` and torch). Raw numbers: benchmarks/results/nbl_stats_ab.json.

Run: python benchmarks/nbl_stats_ab.py [--against 5d9ef23 [REV ...]] [--tokens 20480] [--rounds 5] [--threads 1]
(5d9ef23 is the commit of the last full-size measurement, benchmarks/results/nbl_stats_threads1.json; every
REV given is one more side, each against this tree.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: What each side's process runs: one statistics pass, timed; prints one JSON line. Before the per-layer folder
#: (commit 9b404d7) the statistics were one ``.safetensors`` file, after it a folder.
CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[2]))
from attnlab.nbl import session as S
calib = S.Calibration(source="builtin:0.1", tokens=int(sys.argv[1]), seq_len=256, batch_size=8)
s = S.Session.open("smollm2")
name = "stats" if hasattr(S, "STATS_CODE") else "stats.safetensors"
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.TemporaryDirectory() as tmp:
    t0, c0 = time.perf_counter(), time.process_time()
    result, _ = s.stats(calib, path=Path(tmp) / name, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"tokens": result.tokens, "wall_s": wall, "cpu_s": cpu, "rss_before_mb": rss0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "module": S.__file__}))
"""


def earlier_tree(rev: str, into: Path) -> Path:
    """``src/`` of ``rev`` unpacked under ``into`` (``git archive``; the repository is not touched)."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        done = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=f, stderr=subprocess.PIPE,
                              text=True)
    if done.returncode:
        print(f"nbl_stats_ab.py: {rev!r} is not a commit of this repository with a src/ folder (git archive: "
              f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}); give one, e.g. 5d9ef23",
              file=sys.stderr)
        raise SystemExit(2)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_side(src: Path, tokens: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tokens), str(threads)], env=env, cwd=src.parent,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the side in {src} failed:\n{out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if not row["module"].startswith(str(src)):
        raise SystemExit(f"the side in {src} imported {row['module']} instead (an installed attnlab shadows it)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", nargs="+", default=["5d9ef23"], help="earlier commits (default 5d9ef23)")
    parser.add_argument("--tokens", type=int, default=20_480, help="calibration tokens per pass (default 20,480)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sides: dict[str, list[dict]] = {"this tree": [], **{rev: [] for rev in args.against}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT / "src"}
        for rev in args.against:
            (Path(tmp) / rev).mkdir()
            trees[rev] = earlier_tree(rev, Path(tmp) / rev)
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for side in order:
                row = run_side(trees[side], args.tokens, args.threads)
                sides[side].append({**row, "round": r, "load_average": os.getloadavg()})
                print(f"round {r + 1}/{args.rounds} {side}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, "
                      f"peak RSS {row['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    med = {side: {k: statistics.median(row[k] for row in rows) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
           for side, rows in sides.items()}
    new = med["this tree"]
    out = {"against": args.against, "tokens": args.tokens, "rounds": args.rounds, "threads": args.threads,
           "median": med, "runs": sides,
           "this_over": {rev: {k: new[k] / med[rev][k] for k in new} for rev in args.against},
           "tokens_per_cpu_second": {side: args.tokens / m["cpu_s"] for side, m in med.items()},
           "environment": environment()}
    atomic_write_json(RESULTS / "nbl_stats_ab.json", out)
    print(json.dumps({"median": med, "this_over": out["this_over"]}, indent=1))


if __name__ == "__main__":
    main()
