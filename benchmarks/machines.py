"""machines benchmark: tokens/s per executor with ratios to the reference TM interpreter
measured in the same run, interleaved repeats (median, min, max), threads pinned.

    python benchmarks/machines.py [--repeats 5] [--threads 1] [--long]

--long adds the two long runs: bcount k=20 on kv (46,137,324 tokens, W=21, checked every 4096 TM steps)
and BB5 (47,176,870 steps) on the reference interpreter. Results: benchmarks/results/machines.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, set_threads
from attnlab.machines.certificate import certify
from attnlab.machines.compile import compile_pm
from attnlab.machines.executors import DenseExecutor, make_executor, table_batch
from attnlab.machines.library import library_machine
from attnlab.machines.post import tm_to_pm
from attnlab.machines.reference import run_tm
from attnlab.machines.simulate import run_machine, token_marks

RESULTS = Path(__file__).parent / "results"


def bcount_setup(k: int, batch: int = 1, seed: int = 0):
    """bcount on '#0^k' (row 0) and random '#'+bits of length k (other rows): all need W = k + 1."""
    tm = library_machine("bcount")
    tr = tm_to_pm(tm)
    W = k + 1
    model = compile_pm(tr.pm, W)
    rng = random.Random(seed)
    texts = ["#" + "0" * k] + ["#" + "".join(rng.choice("01") for _ in range(k)) for _ in range(batch - 1)]
    prompts = np.array([model.prompt(*tr.initial_config(tm.encode(t), W)) for t in texts])
    return tm, tr, model, prompts, token_marks(tr, model)


def workloads():
    """name -> (function returning (units, seconds), unit). Setup (compile, certify) is outside the timing."""
    tm, tr, model, prompts, marks = bcount_setup(14)
    cert = certify(model)
    bb4 = tm_to_pm(library_machine("bb4"))
    bb4_model = compile_pm(bb4.pm, 13)
    bb4_prompt = bb4_model.prompt(*bb4.initial_config([], 13))
    bb4_marks = token_marks(bb4, bb4_model)
    _, _, bmodel, bprompts, bmarks = bcount_setup(8, batch=64)
    _, _, tmodel, tprompts, tmarks = bcount_setup(10, batch=4096)
    tcert = certify(tmodel)
    pal = tm_to_pm(library_machine("pal"))
    pal_model = compile_pm(pal.pm, 12)
    rng = random.Random(1)
    words = ["".join(rng.choice("ab") for _ in range(rng.randint(6, 12))) for _ in range(64)]
    pal_prompts = np.array([pal_model.prompt(*pal.initial_config(pal.tm.encode(w), 12)) for w in words])
    pal_marks = token_marks(pal, pal_model)

    def reference():
        t0 = time.perf_counter()
        r = run_tm(tm, tm.encode("#" + "0" * 14))
        return r.steps, time.perf_counter() - t0

    def single(name, m=model, p=prompts[0], mk=marks, c=cert):
        def run():
            ex = make_executor(name, m, p.tolist(), mk, c if name == "table" else None)
            t0 = time.perf_counter()
            ex.advance(10**12, 10**12)
            return ex.tokens, time.perf_counter() - t0
        return run

    def dense_batch(m, p, mk):
        def run():
            ex = DenseExecutor(m, p, mk)
            t0 = time.perf_counter()
            tokens = ex.run_batch(10**9)
            return int(tokens.sum()), time.perf_counter() - t0
        return run

    def table_numpy():
        t0 = time.perf_counter()
        tokens, _, _ = table_batch(tmodel, tcert, tprompts, tmarks, 10**9)
        return int(tokens.sum()), time.perf_counter() - t0

    return {
        "reference TM (bcount k=14)": (reference, "TM steps/s", None),
        "table B=1 (bcount k=14, |V|=232)": (single("table"), "tokens/s", model.vocab_size),
        "kv B=1 (bcount k=14, |V|=232)": (single("kv"), "tokens/s", model.vocab_size),
        "dense B=1 (bb4, |V|=88, W=13)": (single("dense", bb4_model, np.array(bb4_prompt), bb4_marks),
                                          "tokens/s", bb4_model.vocab_size),
        "dense B=64 (bcount k=8, |V|=232, W=9)": (dense_batch(bmodel, bprompts, bmarks), "tokens/s",
                                                  bmodel.vocab_size),
        "dense B=64 (pal, |V|=324, W=12)": (dense_batch(pal_model, pal_prompts, pal_marks), "tokens/s",
                                            pal_model.vocab_size),
        "table numpy B=4096 (bcount k=10)": (table_numpy, "tokens/s", tmodel.vocab_size),
    }


def long_runs() -> dict:
    out = {}
    t0 = time.perf_counter()
    r = run_machine(library_machine("bcount"), "#" + "0" * 20, executor="kv", check_every=4096)
    out["bcount_k20_kv"] = {"tokens": r.tokens, "tm_steps": r.tm_steps, "window": r.window, "halted": r.halted,
                            "mismatches": r.mismatches, "checks": r.checks,
                            "wall_s": round(time.perf_counter() - t0, 2), "tokens_per_s": r.tokens_per_s}
    print(f"bcount k=20 on kv: {r.tokens:,} tokens, W={r.window}, mismatches {r.mismatches}, "
          f"{out['bcount_k20_kv']['wall_s']} s wall ({r.tokens_per_s:,.0f} tokens/s)")
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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long", action="store_true", help="also run bcount k=20 on kv and BB5 on the reference")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    work = workloads()
    rates: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(args.repeats):  # interleaved: each repeat runs every workload once
        for name, (fn, _, _) in work.items():
            units, seconds = fn()
            rates[name].append(units / seconds)
    ref = statistics.median(rates["reference TM (bcount k=14)"])
    rows = []
    print(f"threads {threads}, repeats {args.repeats} (interleaved); ratio = rate / reference TM steps/s")
    print(f"{'workload':<40} {'median':>12} {'min':>12} {'max':>12}  {'unit':<10} {'ratio':>6}")
    for name, (_, unit, vocab) in work.items():
        med = statistics.median(rates[name])
        rows.append({"workload": name, "unit": unit, "vocab_size": vocab, "median": round(med),
                     "min": round(min(rates[name])), "max": round(max(rates[name])),
                     "ratio_to_reference": round(med / ref, 3)})
        print(f"{name:<40} {med:>12,.0f} {min(rates[name]):>12,.0f} {max(rates[name]):>12,.0f}  {unit:<10} "
              f"{med / ref:>6.2f}")
    result = {"threads": threads, "repeats": args.repeats, "rows": rows, "environment": environment()}
    if args.long:
        result["long"] = long_runs()
    atomic_write_json(RESULTS / "machines.json", result)
    print(f"wrote {RESULTS / 'machines.json'}")


if __name__ == "__main__":
    main()
