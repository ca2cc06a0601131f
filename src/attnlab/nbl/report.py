"""The tables and figures of NBL's run records, shared by the CLI (``rank``, ``compare``, ``bench`` with
``-o``) and the tour, so a table in the report is exactly what its command writes."""

from __future__ import annotations

from pathlib import Path

from ..core.records import RunRecord
from .registry import SELECTORS

RANK_TITLE = "Per-layer scores (lower = more replaceable)"
PERPLEXITY_TITLE = "Held-out perplexity against replaced attention layers"
SPEED_COLUMNS = ["batch", "prompt (tokens)", "prefill speed-up (x)", "FLOP ceiling (x)", "decode speed-up (x)",
                 "byte ceiling (x)", "KV cache (MB)", "KV cache, new (MB)"]


def add_rank(rec: RunRecord, ranks: list[dict], out_dir: Path, command: str, model: str) -> None:
    """The per-layer score table and one bar chart per selector."""
    from ..core.plots import plt, save_figure

    rec.add_table(RANK_TITLE, ["layer", *SELECTORS], [[r["layer"], *(r[s] for s in SELECTORS)] for r in ranks],
                  command=command)
    fig, axes = plt.subplots(1, len(SELECTORS), figsize=(13, 3), sharex=True)
    for ax, sel in zip(axes, SELECTORS, strict=True):
        values = [r[sel] for r in ranks]
        ax.bar([r["layer"] for r in ranks], values, color="tab:blue")
        ax.set_yscale("log" if min(values) > 0 else "linear")
        ax.set_title(f"{sel} (lower = replace first)", fontsize=9)
        ax.set_xlabel("layer")
    rec.add_figure(save_figure(fig, Path(out_dir) / "nbl_scores.png").resolve(),
                   f"Per-layer score of each selector on {model} (cca: the paper's bound, Thm 3.2).", command=command)


def add_perplexity(rec: RunRecord, rows: list[dict], out_dir: Path, command: str, model: str) -> None:
    """The perplexity table (one row per configuration and k), its metrics and its figure."""
    from ..core.plots import plt, save_figure

    reference = rows[0]["reference_perplexity"]
    rec.metrics["reference_perplexity"] = reference
    for r in rows:
        rec.metrics[f"ppl_{r['label']}_k{r['k']}"] = r["perplexity"]
    rec.add_table(PERPLEXITY_TITLE, ["config", "k", "layers", "perplexity", "increase (%)", "top-1 agreement"],
                  [[r["label"], r["k"], " ".join(map(str, r["layers"])), r["perplexity"], 100 * r["increase"],
                    r["top1_agreement"]] for r in rows], command=command)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r["k"], r["perplexity"]) for r in rows if r["label"] == label)
        dashed = label.startswith(("drop", "block"))  # the baselines
        ax.plot(*zip(*pts, strict=True), marker="o", label=label, linestyle="--" if dashed else "-")
    ax.axhline(reference, color="k", linewidth=0.8, label="original")
    ax.set_xticks(sorted({r["k"] for r in rows}))
    ax.set_xlabel("attention layers replaced")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"{model}: NBL vs Attention Drop")
    r0 = rows[0]
    rec.add_figure(save_figure(fig, Path(out_dir) / "nbl_perplexity.png").resolve(),
                   f"Held-out perplexity ({r0['eval_tokens']} predicted tokens of held-out text, disjoint from the "
                   f"{r0['calibration_tokens']} calibration tokens) against the number of replaced attention layers.",
                   command=command)


def add_speed(rec: RunRecord, speed: dict, command: str) -> None:
    """The speed table of :func:`attnlab.nbl.bench.bench_pair`."""
    rec.add_table(f"Speed, {speed['replaced']} of {speed['layers']} attention layers replaced (original time / new "
                  f"time, median of {speed['repeats']} interleaved repeats, {speed['threads']} thread(s))",
                  SPEED_COLUMNS,
                  [[r["batch"], r["prompt"], r["prefill_speedup"], r["prefill_ceiling"], r["decode_speedup"],
                    r["decode_byte_ceiling"], r["kv_cache_mb"], r["kv_cache_mb_model"]] for r in speed["rows"]],
                  command=command)
    for r in speed["rows"]:
        rec.metrics[f"prefill_speedup_b{r['batch']}_p{r['prompt']}"] = r["prefill_speedup"]
        rec.metrics[f"decode_speedup_b{r['batch']}_p{r['prompt']}"] = r["decode_speedup"]
