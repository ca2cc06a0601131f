"""attnlab.memorize: how short can a soft prompt be? (Wang & Lin, "Prompt Tuning Transformers for Data
Memorization", NeurIPS 2025.)

Pipeline: ``data`` (seeded datasets) -> ``backbone`` (frozen causal transformer, prompt states cached,
KV cache for generation steps) -> ``tune`` (fit one prompt to exact memorization) -> ``search`` (minimal
prompt length m*) -> ``sweep`` (resumable grids) -> ``theory`` (sqrt law and power-law fits) -> ``plots``.
``peft_adapter`` runs the same search on any Hugging Face causal LM through peft.
"""

from __future__ import annotations

from pathlib import Path

from ..core.records import RunRecord
from .backbone import Backbone, BackboneConfig
from .data import MemorizeData, lowrank_tokens, make_data, random_tokens
from .search import SearchResult, find_m_star, search_min_length
from .tune import FitResult, TuneConfig, exact_match, fit_prompt

__all__ = ["Backbone", "BackboneConfig", "MemorizeData", "random_tokens", "lowrank_tokens", "make_data",
           "TuneConfig", "FitResult", "fit_prompt", "exact_match", "SearchResult", "search_min_length",
           "find_m_star", "sweep_record", "tour", "TOUR_CONFIG"]

#: The tour's reduced sweep: the committed one (configs/memorize/cpu_sweep.yaml) at a few minutes' scale.
TOUR_CONFIG = {
    "name": "memorize-tour",
    "workers": 1,
    "base": {"n_pairs": 16, "seq_len": 4, "vocab": 32, "n_classes": 8, "d_model": 32, "n_heads": 4, "n_layers": 1,
             "d_ff": 64, "gain": 3.0, "lr": 0.1, "max_steps": 200, "m_max": 64, "restarts": 2,
             "train_steps": 100},
    "experiments": {
        "n_pairs": {"n_pairs": [4, 8, 16, 32]},
        "seq_len": {"seq_len": [2, 4, 8]},
        "gen_steps": {"gen_steps": [0, 1, 2]},
        "rank": {"n_pairs": 32, "rank": [1, 2, 4]},
        "init": {"variants": [{"init": "gaussian", "gain": 1.0}, {"init": "gaussian", "gain": 3.0},
                              {"init": "orthogonal", "gain": 3.0}, {"init": "identity"}, {"init": "trained"}]},
    },
}


def sweep_record(sweep_dir: Path, seed: int = 0, n_boot: int = 2000, fig_dir: Path | None = None,
                 command: str | None = None) -> RunRecord:
    """A run record (metrics, tables, figures) for a sweep directory."""
    from .plots import plot_sweep
    from .sweep import load_config

    config = load_config(Path(sweep_dir) / "config.yaml")
    rec = RunRecord(name="memorize", title="memorize: minimal soft-prompt length for exact memorization",
                    command=command or f"attnlab memorize plot {sweep_dir}", seed=seed, config=config)
    with rec.timed("plot"):
        summary, figures = plot_sweep(sweep_dir, fig_dir, seed=seed)
    if "power_law" in summary:
        pl = summary["power_law"]
        rec.metrics.update({"power_law_alpha": round(pl["alpha"], 4), "power_law_ci95": [round(x, 4) for x in pl["ci95"]],
                            "power_law_points": pl["n_points"], "sqrt_law_c": round(summary["sqrt_law_c"], 4),
                            "sqrt_log_law_c": round(summary["sqrt_log_law_c"], 4),
                            "sqrt_law_rms_log_residual": round(summary["sqrt_law_rms_log_residual"], 4),
                            "power_law_rms_log_residual": round(summary["power_law_rms_log_residual"], 4)})
    for exp in ("n_pairs", "seq_len"):
        if f"power_law_{exp}" in summary:
            pl = summary[f"power_law_{exp}"]
            rec.metrics[f"alpha_{exp}"] = round(pl["alpha"], 4)
            rec.metrics[f"alpha_{exp}_ci95"] = [round(x, 4) for x in pl["ci95"]]
    cols = ["n_pairs", "seq_len", "m*", "steps", "probes", "probe seconds"]
    for exp in ("n_pairs", "seq_len", "gen_steps", "rank"):
        if summary["tables"].get(exp):
            rec.add_table(f"m* against {exp}", [f"[{exp}]"] + cols, summary["tables"][exp])
    if summary["tables"]["init"]:
        rec.add_table("m* against backbone init", ["init", "m*", "steps", "probes", "probe seconds"],
                      summary["tables"]["init"])
    for path, caption in figures:
        rec.add_figure(Path(path).resolve(), caption)
    rec.notes.append("m* is the smallest prompt length that memorized exactly (teacher-forced argmax right at every "
                     "target) within the step budget and restarts in the config; it depends on that budget.")
    return rec


def tour(out_dir: Path, seed: int = 0) -> RunRecord:
    """Reduced sweep (a few minutes on 2 cores) with the scaling fit and the four plots."""
    from .sweep import run_sweep

    out_dir = Path(out_dir)
    config = {**TOUR_CONFIG, "seeds": [seed]}
    run_sweep(config, out_dir / "sweep", progress=True)
    rec = sweep_record(out_dir / "sweep", seed=seed, fig_dir=out_dir, command="attnlab tour --only memorize")
    rec.notes.append("Reduced scale (d_model=32, 1 layer, 200 steps per probe); the committed sweep is "
                     "configs/memorize/cpu_sweep.yaml, results in docs/results/memorize/.")
    return rec
