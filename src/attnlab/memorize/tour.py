"""The memorize section of ``attnlab tour``: a reduced sweep of m* searches with the scaling fit and plots.

Quick profile (the default, under a minute on 2 cores): m* against n_pairs on a small frozen backbone, which
shows the effect the paper bounds (the minimal prompt grows with the data, m* against n_pairs with a
fitted power law). Full profile (``attnlab tour --full``, a few minutes): the same backbone and budget over
every axis of the committed sweep (n_pairs, seq_len, generation steps, rank, init). The committed CPU-scale
sweep itself is ``configs/memorize/cpu_sweep.yaml`` (results in ``docs/results/memorize/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.records import RunRecord

#: Measured on an idle 2-core CPU (`make demo` from a fresh clone; `attnlab tour --full`, model cached):
#: quick 24 s, full 125 s.
EXPECTED_SECONDS = {"quick": 30, "full": 130}

#: A small backbone and budget: d_model 32, 1 layer, vocab 32, seq_len 4, 200 Adam steps x 2 restarts, m <= 64.
_BASE = {"n_pairs": 16, "seq_len": 4, "vocab": 32, "n_classes": 8, "d_model": 32, "n_heads": 4, "n_layers": 1,
         "d_ff": 64, "gain": 3.0, "lr": 0.1, "max_steps": 200, "m_max": 64, "restarts": 2, "train_steps": 100}

#: One sweep config per profile (the seed list is set from the tour's --seed).
CONFIGS = {
    "quick": {"name": "memorize-tour-quick", "workers": 1, "base": _BASE,
              "experiments": {"n_pairs": {"n_pairs": [4, 8, 16, 32]}}},
    "full": {"name": "memorize-tour", "workers": 1, "base": _BASE, "experiments": {
        "n_pairs": {"n_pairs": [4, 8, 16, 32]},
        "seq_len": {"seq_len": [2, 4, 8]},
        "gen_steps": {"gen_steps": [0, 1, 2]},
        "rank": {"n_pairs": 32, "rank": [1, 2, 4]},
        "init": {"variants": [{"init": "gaussian", "gain": 1.0}, {"init": "gaussian", "gain": 3.0},
                              {"init": "orthogonal", "gain": 3.0}, {"init": "identity"}, {"init": "trained"}]},
    }},
}


def tour(out_dir: Path, seed: int = 0, full: bool = False) -> RunRecord:
    """Run the profile's sweep into ``out_dir/sweep``, plot into ``out_dir``; returns the section's record."""
    from .plots import sweep_record
    from .sweep import run_sweep

    out_dir = Path(out_dir)
    profile = "full" if full else "quick"
    config = {**CONFIGS[profile], "seeds": [seed]}
    rows = run_sweep(config, out_dir / "sweep", progress=sys.stderr.isatty(), quiet=True)
    command = f"attnlab tour --only memorize --seed {seed}" + (" --full" if full else "")
    rec = sweep_record(out_dir / "sweep", seed=seed, fig_dir=out_dir, command=command)
    rec.config["profile"] = profile
    growth = sorted((r["settings"]["n_pairs"], r["m_star"]) for r in rows if "n_pairs" in r["experiments"])
    rec.metrics = {"m_star_by_n_pairs": {str(n): m for n, m in growth}, **rec.metrics}  # the headline first
    rec.notes.append(f"{profile} profile: d_model 32, 1 layer, vocab 32, seq_len 4, 200 Adam steps x 2 restarts "
                     "per prompt length, m <= 64, one seed; "
                     + ("`attnlab tour --full` adds the seq_len, generation-steps, rank and init experiments."
                        if not full else "the quick profile (`attnlab tour`) runs the n_pairs experiment only.")
                     + " The committed sweep is configs/memorize/cpu_sweep.yaml, results in docs/results/memorize/.")
    return rec
