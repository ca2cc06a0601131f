"""NBL benchmark (issue 4 targets), resumable; results in benchmarks/results/nbl_*.json(l).

quality: SmolLM2-135M-Instruct, 102,400 calibration tokens of the built-in corpus (builtin:0.1 holds out
         a tenth of the topics, disjoint by construction) sampled by each of --seeds (default 0 1 2),
         held-out perplexity on 6,144 tokens at k = 4, 8, 12 for one-shot NBL (CCA, cosine, NMSE selectors;
         sequential NBL costs k passes over the calibration set), Attention Drop and whole-block drop
         (ShortGPT's block influence, Gromov et al.'s angular distance). One JSON line per (config, k) in
         results/nbl_quality/seedS.jsonl: rerun to resume; results/nbl_quality.json: per row the perplexity
         of every seed, mean, min and max.
stats:   the streamed statistics pass alone, from scratch (no cache): 102,400 SmolLM2 tokens, wall time,
         tokens/s and peak RSS (target: under 10 minutes, O(L d^2) memory).
speed:   a random-init Llama-shaped model of >= 0.5B parameters, original vs 4 of 8 attention layers
         replaced, prefill and cached decode at two prompt lengths and two batch sizes, interleaved
         repeats, with the analytic FLOP / byte ceilings.

    python benchmarks/nbl.py [quality] [stats] [speed] [--threads N] [--seeds S ...]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment, set_threads

RESULTS = Path(__file__).parent / "results"


def _quality_configs():
    """compare's defaults but sequential NBL, whose k passes over the calibration set cost more than the other
    eight configurations together (one seed of it is in the previous table: nbl_quality.jsonl in git history)."""
    from attnlab.nbl.experiment import DEFAULT_CONFIGS

    return tuple(c for c in DEFAULT_CONFIGS if not c.sequential)


def quality(threads: int, seeds: list[int]) -> None:
    import numpy as np

    from attnlab.nbl.experiment import perplexity_vs_layers
    from attnlab.nbl.session import Calibration, Session

    session = Session.open("smollm2")
    runs = {}
    for seed in seeds:  # each seed shuffles the calibration documents: another sample of 102,400 tokens
        calib = Calibration(source="builtin:0.1", tokens=102_400, seq_len=256, batch_size=8, seed=seed)
        stats, _ = session.stats(calib, progress=True)  # cached after the first run; `stats` times a fresh pass
        rows = perplexity_vs_layers(session, calib, heldout_tokens=6144, ks=[4, 8, 12], configs=_quality_configs(),
                                    log=RESULTS / "nbl_quality" / f"seed{seed}.jsonl", progress=True,
                                    threads=threads)
        runs[seed] = {"calibration": stats.meta.get("calibration"), "tokens": stats.tokens, "rows": rows}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = []
    for row in runs[seeds[0]]["rows"]:
        same = [next(r for r in runs[s]["rows"] if r["key"] == row["key"]) for s in seeds]
        ppl = np.array([r["perplexity"] for r in same])
        table.append({"label": row["label"], "k": row["k"], "perplexity_mean": float(ppl.mean()),
                      "perplexity_min": float(ppl.min()), "perplexity_max": float(ppl.max()),
                      "perplexity": ppl.tolist(), "top1_agreement": [r["top1_agreement"] for r in same],
                      "layers": [r["layers"] for r in same], "reference_perplexity": row["reference_perplexity"]})
    atomic_write_json(RESULTS / "nbl_quality.json", {
        "model": "smollm2", "seeds": seeds, "heldout_tokens": 6144, "peak_rss_mb": peak_mb, "threads": threads,
        "runs": {str(s): {k: v for k, v in r.items() if k != "rows"} for s, r in runs.items()}, "table": table,
        "environment": environment()})
    print(f"reference perplexity {table[0]['reference_perplexity']:.3f}; seeds {seeds}; peak RSS {peak_mb:.0f} MB")
    print("cells: held-out perplexity, mean over the seeds [min-max] (mean top-1 agreement with the original)\n")
    ks = sorted({r["k"] for r in table})
    print("| config (method/selector) | " + " | ".join(f"k = {k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for label in dict.fromkeys(r["label"] for r in table):
        cells = [next(r for r in table if r["label"] == label and r["k"] == k) for k in ks]
        print(f"| `{label}` | " + " | ".join(
            f"{c['perplexity_mean']:.2f} [{c['perplexity_min']:.2f}-{c['perplexity_max']:.2f}] "
            f"({np.mean(c['top1_agreement']):.3f})" for c in cells) + " |")


def stats(threads: int) -> None:
    import os
    import tempfile

    from attnlab.nbl.session import Calibration, Session

    calib = Calibration(source="builtin:0.1", tokens=102_400, seq_len=256, batch_size=8)
    session = Session.open("smollm2")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result, _ = session.stats(calib, path=Path(tmp) / "stats", progress=True)
        seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"model": "smollm2", "tokens": result.tokens, "seconds": seconds,
           "tokens_per_second": result.tokens / seconds,
           "peak_rss_mb": peak_mb, "rss_after_model_load_mb": rss_before, "threads": threads,
           "load_average": os.getloadavg(), "environment": environment()}
    atomic_write_json(RESULTS / f"nbl_stats_threads{threads}.json", out)
    print(f"statistics over {result.tokens} tokens: {seconds / 60:.1f} min ({out['tokens_per_second']:.0f} tokens/s, "
          f"{threads} thread(s)); peak RSS {peak_mb:.0f} MB ({rss_before:.0f} MB after loading the model)")


def speed(threads: int) -> None:
    from transformers import LlamaConfig

    from attnlab.nbl.bench import bench_pair, random_pair

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=8,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048)
    model, reference = random_pair(config, [1, 3, 5, 7])
    params = sum(p.numel() for p in reference.parameters())
    result = bench_pair(model, reference, prompt_lengths=[128, 512], batch_sizes=[1, 4], decode_tokens=16, repeats=3,
                        progress=True)
    result.update(params=params, shape=config.to_dict(), environment=environment())
    atomic_write_json(RESULTS / "nbl_speed.json", result)
    print(f"Llama-shaped random model, {params / 1e6:.0f}M parameters, {threads} thread(s)")
    print(result["table"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("parts", nargs="*", default=["quality", "stats", "speed"],
                   choices=["quality", "stats", "speed"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="calibration seeds of quality")
    args = p.parse_args()
    threads = set_threads(args.threads)
    (RESULTS / "nbl_quality").mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        if part == "quality":
            quality(threads, args.seeds)
        else:
            {"stats": stats, "speed": speed}[part](threads)


if __name__ == "__main__":
    sys.exit(main())
