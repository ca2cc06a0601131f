"""machines benchmark: every executor and the reference TM interpreter in honest units, side by side.

    python benchmarks/machines.py [--repeats 7] [--threads 1] [--long]

Each row reports TM steps/s, tokens/s and tokens per TM step (the same run's counts: a row's TM steps are the
reference interpreter's steps on the same inputs), wall and CPU time. Ratios are only taken in one unit and
on the same work: ``vs reference`` is TM steps/s over the reference's TM steps/s on the same input (bcount
k=14); ``vs pure Python`` is a native executor's rate over its pure-Python twin on the same workload (both
units give the same ratio there). Interleaved repeats (each repeat runs every workload once), median with min
and max, threads pinned. Setup (compile, certify, building
the executor, the numba JIT) is outside the timing; the JIT is measured apart, in fresh processes: a cold
compile into an empty numba cache, then a load from that cache.

Also the parameter counts of the factored output layer (W_2 into SYM/ST, then U) against the dense one-hot
W_2 (units x V) it replaced, for a few library machines (``--sizes`` prints only that table).

--long adds the two long runs: bcount k=20 on kv and kv-native (46,137,324 tokens, W=21, checked every 4096 TM
steps) and BB5 (47,176,870 steps) on the reference interpreter. Results: benchmarks/results/machines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, package_version, set_threads
from attnlab.machines.certificate import certify
from attnlab.machines.compile import compile_pm, compiled_size
from attnlab.machines.executors import DenseExecutor, make_executor, table_batch
from attnlab.machines.library import library_machine
from attnlab.machines.post import expected_tokens, tm_to_pm
from attnlab.machines.reference import run_tm
from attnlab.machines.simulate import run_machine, token_marks

RESULTS = Path(__file__).parent / "results"
#: back-to-back runs in one timed sample of a native row (one run of bcount k=14 takes a few milliseconds there)
NATIVE_INNER = 20


def setup(name: str, texts: list[str], W: int):
    """A library TM compiled at window W, the prompts for ``texts`` (B, W), the marks and the reference TM
    steps and tokens (lemma A) of each text."""
    tm = library_machine(name)
    tr = tm_to_pm(tm)
    model = compile_pm(tr.pm, W)
    prompts = np.array([model.prompt(*tr.initial_config(tm.encode(t), W)) for t in texts])
    refs = [run_tm(tm, tm.encode(t)) for t in texts]
    assert all(r.halted for r in refs)
    steps = sum(r.steps for r in refs)
    tokens = sum(expected_tokens(r.steps - r.left_moves, r.left_moves, W) for r in refs)
    return tm, model, prompts, token_marks(tr, model), steps, tokens


def bits(rng: random.Random, k: int, batch: int) -> list[str]:
    """bcount inputs: '#0^k' first, then random '#'+bits of length k (all need W = k + 1)."""
    return ["#" + "0" * k] + ["#" + "".join(rng.choice("01") for _ in range(k)) for _ in range(batch - 1)]


def timed(fn):
    """fn() -> tokens; returns (tokens, wall s, CPU s)."""
    w0, c0 = time.perf_counter(), time.process_time()
    tokens = fn()
    return tokens, time.perf_counter() - w0, time.process_time() - c0


def workloads() -> dict:
    """name -> (sample: () -> (tokens, wall, cpu), TM steps per sample, tokens per sample, executor, twin)."""
    tm, model, prompts, marks, steps, tokens = setup("bcount", bits(random.Random(0), 14, 1), 15)
    cert = certify(model)
    _, bb4_model, bb4_prompts, bb4_marks, bb4_steps, bb4_tokens = setup("bb4", [""], 13)
    _, b_model, b_prompts, b_marks, b_steps, b_tokens = setup("bcount", bits(random.Random(0), 8, 64), 9)
    rng = random.Random(1)
    words = ["".join(rng.choice("ab") for _ in range(rng.randint(6, 12))) for _ in range(64)]
    _, pal_model, pal_prompts, pal_marks, pal_steps, pal_tokens = setup("pal", words, 12)
    _, t_model, t_prompts, t_marks, t_steps, t_tokens = setup("bcount", bits(random.Random(0), 10, 4096), 11)
    t_cert = certify(t_model)

    def reference():
        cells = tm.encode("#" + "0" * 14)
        _, wall, cpu = timed(lambda: run_tm(tm, cells).steps)
        return tokens, wall, cpu

    def single(name, m, p, mk, c, inner=1):
        def sample():
            executors = [make_executor(name, m, p.tolist(), mk, c if "table" in name else None)
                         for _ in range(inner)]
            def go():
                for ex in executors:
                    ex.advance(10**12, 10**12)
                return sum(ex.tokens for ex in executors)
            return timed(go)
        return sample

    def dense_batch(m, p, mk):
        def sample():
            ex = DenseExecutor(m, p, mk)
            return timed(lambda: int(ex.run_batch(10**9).sum()))
        return sample

    def table_numpy():
        return timed(lambda: int(table_batch(t_model, t_cert, t_prompts, t_marks, 10**9)[0].sum()))

    p0 = prompts[0]
    k14 = "bcount k=14, W=15"
    return {
        f"reference TM ({k14})": (reference, steps, tokens, "reference", None),
        f"table B=1 ({k14})": (single("table", model, p0, marks, cert), steps, tokens, "table", None),
        f"table-native B=1 ({k14})": (single("table-native", model, p0, marks, cert, NATIVE_INNER),
                                      NATIVE_INNER * steps, NATIVE_INNER * tokens, "table-native", "table"),
        f"kv B=1 ({k14})": (single("kv", model, p0, marks, None), steps, tokens, "kv", None),
        f"kv-native B=1 ({k14})": (single("kv-native", model, p0, marks, None, NATIVE_INNER),
                                   NATIVE_INNER * steps, NATIVE_INNER * tokens, "kv-native", "kv"),
        "dense B=1 (bb4, W=13)": (single("dense", bb4_model, bb4_prompts[0], bb4_marks, None), bb4_steps,
                                  bb4_tokens, "dense", None),
        "dense B=64 (bcount k=8, W=9)": (dense_batch(b_model, b_prompts, b_marks), b_steps, b_tokens, "dense", None),
        "dense B=64 (pal, W=12)": (dense_batch(pal_model, pal_prompts, pal_marks), pal_steps, pal_tokens, "dense",
                                   None),
        "table numpy B=4096 (bcount k=10, W=11)": (table_numpy, t_steps, t_tokens, "table_batch", None),
    }


def sizes() -> list[dict]:
    """Parameters with the factored output layer (the compiled network) and with the dense one-hot W_2."""
    rows = []
    for name in ("utm", "parens", "pal", "bb4", "bb5"):
        pm = tm_to_pm(library_machine(name)).pm
        model = compile_pm(pm, 4)  # the weights do not depend on W
        size = compiled_size(len(pm.states), len(pm.symbols), len(pm.halting))
        assert size["params"] == model.params
        dense = model.params - size["output_params"] + size["dense_output_params"]
        rows.append({"machine": name, "n_states": len(pm.states), "n_symbols": len(pm.symbols),
                     "vocab_size": model.vocab_size, "units": model.d_ffn,
                     "output_params_factored": size["output_params"],
                     "output_params_dense": size["dense_output_params"],
                     "unembed_params": int(model.weights["unembed"].size), "params_factored": model.params,
                     "params_dense": dense})
    return rows


def print_sizes(rows: list[dict]) -> None:
    print(f"{'machine':<8} {'|S|':>4} {'|Λ|':>4} {'V':>5} {'units':>5} {'W2 dense':>10} {'W2+U':>9} "
          f"{'params dense':>12} {'params':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['machine']:<8} {r['n_states']:>4} {r['n_symbols']:>4} {r['vocab_size']:>5} {r['units']:>5} "
              f"{r['output_params_dense']:>10,} {r['output_params_factored']:>9,} {r['params_dense']:>12,} "
              f"{r['params_factored']:>9,} {r['params_dense'] / r['params_factored']:>5.2f}x")


def jit_seconds() -> dict:
    """First use of the native kernels in fresh processes: numba's import, a cold compile into an empty cache,
    then a load from that cache (what a second CLI run pays)."""
    code = ("import json, time\nt0 = time.perf_counter()\nimport numba\nt1 = time.perf_counter()\n"
            "from attnlab.machines.native import COMPILE_SECONDS, kernel\nkernel('table'); kernel('kv')\n"
            "print(json.dumps({'import_numba_s': t1 - t0, **{k + '_s': v for k, v in COMPILE_SECONDS.items()}}))")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for kind in ("cold_compile", "cached_load"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out[kind] = {k: round(v, 3) for k, v in json.loads(res.stdout.splitlines()[-1]).items()}
    return out


def long_runs() -> dict:
    out = {}
    for executor in ("kv", "kv-native"):
        t0 = time.perf_counter()
        r = run_machine(library_machine("bcount"), "#" + "0" * 20, executor=executor, check_every=4096)
        row = {"tokens": r.tokens, "tm_steps": r.tm_steps, "window": r.window, "halted": r.halted,
               "mismatches": r.mismatches, "checks": r.checks, "wall_s": round(time.perf_counter() - t0, 2),
               "tokens_per_s": r.tokens_per_s, "tm_steps_per_s": round(r.tm_steps / r.seconds)}
        out[f"bcount_k20_{executor}"] = row
        print(f"bcount k=20 on {executor}: {r.tokens:,} tokens, {r.tm_steps:,} TM steps, W={r.window}, mismatches "
              f"{r.mismatches}, {row['wall_s']} s wall incl. checks ({r.tokens_per_s:,.0f} tokens/s, "
              f"{row['tm_steps_per_s']:,} TM steps/s while generating)")
    tm = library_machine("bb5")
    t0 = time.perf_counter()
    ref = run_tm(tm, [], 10**8)
    out["bb5_reference"] = {"steps": ref.steps, "ones": ref.nonblank(), "halted": ref.halted,
                            "seconds": round(time.perf_counter() - t0, 2)}
    print(f"BB5 on the reference interpreter: {ref.steps:,} steps, {ref.nonblank()} ones, "
          f"{out['bb5_reference']['seconds']} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long", action="store_true", help="also bcount k=20 on kv/kv-native and BB5 on the reference")
    ap.add_argument("--sizes", action="store_true", help="only print the parameter counts (factored vs dense)")
    args = ap.parse_args()
    size_rows = sizes()
    print_sizes(size_rows)
    if args.sizes:
        return
    threads = set_threads(args.threads)
    jit = jit_seconds()
    work = workloads()
    samples: dict[str, list[tuple[int, float, float]]] = {name: [] for name in work}
    for _ in range(args.repeats):  # interleaved: each repeat runs every workload once
        for name, (fn, _, want_tokens, _, _) in work.items():
            tokens, wall, cpu = fn()
            assert tokens == want_tokens, (name, tokens, want_tokens)  # the same work as the reference counts
            samples[name].append((tokens, wall, cpu))
    med = {name: statistics.median(steps / wall for _, wall, _ in samples[name])
           for name, (_, steps, _, _, _) in work.items()}
    ref_name = next(iter(work))
    same_work = [ref_name] + [name for name in work if "B=1 (bcount k=14" in name]
    by_executor = {work[name][3]: name for name in same_work}
    rows = []
    print(f"threads {threads}, repeats {args.repeats} (interleaved), median; vs reference: TM steps/s over the "
          f"reference's TM steps/s; vs pure: over the pure-Python twin")
    print(f"{'workload':<40} {'TM steps/s':>12} {'tokens/s':>13} {'tok/step':>8} {'CPU/wall':>8} {'vs ref':>7} "
          f"{'vs pure':>7}")
    for name, (_, steps, tokens, executor, twin) in work.items():
        walls = [wall for _, wall, _ in samples[name]]
        cpus = [cpu for _, _, cpu in samples[name]]
        rate = med[name]
        row = {"workload": name, "executor": executor, "tm_steps": steps, "tokens": tokens,
               "tokens_per_tm_step": round(tokens / steps, 3),
               "tm_steps_per_s": {"median": round(rate), "min": round(min(steps / w for w in walls)),
                                  "max": round(max(steps / w for w in walls))},
               "tokens_per_s": {"median": round(statistics.median(tokens / w for w in walls)),
                                "min": round(min(tokens / w for w in walls)),
                                "max": round(max(tokens / w for w in walls))},
               "wall_s_median": round(statistics.median(walls), 6), "cpu_s_median": round(statistics.median(cpus), 6),
               # only rows doing the reference's work (the same input) get a ratio to it
               "tm_steps_per_s_vs_reference": round(rate / med[ref_name], 3) if name in same_work else None,
               "vs_pure_python": round(rate / med[by_executor[twin]], 2) if twin else None}
        rows.append(row)
        vs_pure = f"{row['vs_pure_python']:>6.1f}x" if twin else f"{'':>7}"
        vs_ref = f"{row['tm_steps_per_s_vs_reference']:>6.2f}x" if name in same_work else f"{'':>7}"
        print(f"{name:<40} {rate:>12,.0f} {row['tokens_per_s']['median']:>13,} {tokens / steps:>8.2f} "
              f"{row['cpu_s_median'] / row['wall_s_median']:>8.2f} {vs_ref} {vs_pure}")
    print(f"numba JIT (fresh processes): cold {jit['cold_compile']}, cached {jit['cached_load']}")
    env = environment()
    env["versions"].update({name: package_version(name) for name in ("numba", "llvmlite")})
    result = {"threads": threads, "repeats": args.repeats, "native_inner_runs": NATIVE_INNER, "rows": rows,
              "jit_seconds": jit, "sizes": size_rows, "environment": env}
    if args.long:
        result["long"] = long_runs()
    atomic_write_json(RESULTS / "machines.json", result)
    print(f"wrote {RESULTS / 'machines.json'}")


if __name__ == "__main__":
    main()
