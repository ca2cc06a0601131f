"""The report section for NBL on the packaged SmolLM2-135M-Instruct: per-layer scores of every selector,
held-out perplexity against the number of replaced layers, and speed against the original."""

from __future__ import annotations

import copy
from pathlib import Path

from ..core.plots import plt, save_figure
from ..core.records import RunRecord
from .bench import bench_pair
from .experiment import Config, perplexity_vs_layers
from .pipeline import linearize, rank_table
from .scores import SELECTORS
from .session import Calibration, Session

MODEL = "smollm2"
CALIBRATION = Calibration(source="builtin", tokens=8192, seq_len=256, batch_size=8)
HELDOUT_TOKENS = 2048
KS = [4, 8]
#: the paper's method, its baseline, the other selector and the sequential refit (benchmarks/nbl.py runs all)
CONFIGS = (Config("nbl", "cca"), Config("drop", "cosine"), Config("nbl", "cosine"), Config("nbl", "cca", True))


def _rank_figure(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(SELECTORS), figsize=(13, 3), sharex=True)
    for ax, sel in zip(axes, SELECTORS):
        values = [r[sel] for r in rows]
        ax.bar([r["layer"] for r in rows], values, color="tab:blue")
        ax.set_yscale("log" if min(values) > 0 else "linear")
        ax.set_title(f"{sel} (lower = replace first)", fontsize=9)
        ax.set_xlabel("layer")
    return save_figure(fig, path)


def _perplexity_figure(rows: list[dict], reference: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r["k"], r["perplexity"]) for r in rows if r["label"] == label)
        ax.plot(*zip(*pts), marker="o", label=label, linestyle="--" if label.startswith("drop") else "-")
    ax.axhline(reference, color="k", linewidth=0.8, label="original")
    ax.set_xticks(sorted({r["k"] for r in rows}))
    ax.set_xlabel("attention layers replaced")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M: NBL vs Attention Drop")
    return save_figure(fig, path)


def run(out_dir: Path, seed: int = 0) -> RunRecord:
    out_dir = Path(out_dir)
    rec = RunRecord(name="nbl", title="nbl: Neural Block Linearization of SmolLM2-135M", command="attnlab tour --only nbl",
                    seed=seed, config={"model": MODEL, "calibration_tokens": CALIBRATION.tokens,
                                       "seq_len": CALIBRATION.seq_len, "heldout_tokens": HELDOUT_TOKENS, "ks": KS,
                                       "configs": [c.label for c in CONFIGS]})
    with rec.timed("load"):
        session = Session.open(MODEL)
    with rec.timed("statistics"):
        stats, _ = session.stats(CALIBRATION, progress=True)
    with rec.timed("rank"):
        ranks = rank_table(stats)
    rec.add_table("Per-layer scores (lower = more replaceable)", ["layer", *SELECTORS],
                  [[r["layer"], *(r[s] for s in SELECTORS)] for r in ranks],
                  command=f"attnlab nbl rank {MODEL} --tokens {CALIBRATION.tokens}")
    rec.add_figure(_rank_figure(ranks, out_dir / "nbl_scores.png").resolve(),
                   "Per-layer score of each selector on SmolLM2-135M (CCA: the paper's bound).",
                   command=f"attnlab nbl rank {MODEL} --json")
    with rec.timed("perplexity_vs_layers"):
        rows = perplexity_vs_layers(session, CALIBRATION, HELDOUT_TOKENS, KS, CONFIGS, progress=True)
    reference = rows[0]["reference_perplexity"]
    rec.metrics["reference_perplexity"] = reference
    for r in rows:
        rec.metrics[f"ppl_{r['label']}_k{r['k']}"] = r["perplexity"]
    rec.add_table("Held-out perplexity against replaced layers",
                  ["config", "k", "layers", "perplexity", "increase", "top-1 agreement"],
                  [[r["label"], r["k"], " ".join(map(str, r["layers"])), r["perplexity"], f"{r['increase']:+.1%}",
                    r["top1_agreement"]] for r in rows],
                  command=f"attnlab nbl apply {MODEL} --layers K --selector SEL [--method drop] [--sequential] -o DIR"
                          f" && attnlab nbl eval DIR --against {MODEL}")
    rec.add_figure(_perplexity_figure(rows, reference, out_dir / "nbl_perplexity.png").resolve(),
                   f"Held-out perplexity ({HELDOUT_TOKENS} tokens of the built-in corpus, disjoint from the "
                   f"{CALIBRATION.tokens} calibration tokens) against the number of replaced attention layers.")
    with rec.timed("bench"):
        model = copy.deepcopy(session.model)
        linearize(model, stats, 8, "cca")
        speed = bench_pair(model, session.model, [128], [1], decode_tokens=8, repeats=3, seed=seed)
    rec.add_table("Speed, 8 of 30 layers replaced (original time / new time, median of 3 interleaved)",
                  ["batch", "prompt", "prefill x", "FLOP ceiling", "decode x", "byte ceiling", "KV MB", "KV MB new"],
                  [[r["batch"], r["prompt"], r["prefill_speedup"], r["prefill_ceiling"], r["decode_speedup"],
                    r["decode_byte_ceiling"], r["kv_cache_mb"], r["kv_cache_mb_model"]] for r in speed["rows"]],
                  command="attnlab nbl bench DIR --against smollm2")
    rec.notes.append("SmolLM2 weights come from a Q4_1 GGUF (4-bit degraded), so perplexities are not the published "
                     "ones. The tour uses small calibration and held-out sets; benchmarks/nbl.py runs the full sizes.")
    return rec
