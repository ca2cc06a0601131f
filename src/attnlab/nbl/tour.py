"""The report section for NBL on the packaged SmolLM2-135M-Instruct: per-layer scores of every selector,
held-out perplexity against the number of replaced layers (NBL with the paper's CCA selector against
Attention Drop), and speed against the original.

Two profiles: ``quick`` (the default: fewer calibration and held-out tokens, the paper's method against its
baseline) and ``full`` (``attnlab tour --full``: twice the calibration text and two more configurations).
Statistics are cached per model fingerprint, calibration and code version (:mod:`attnlab.nbl.session`), so a
rerun reuses them only when nothing they depend on has changed.
"""

from __future__ import annotations

import copy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.records import RunRecord
from .registry import Calibration, Config

MODEL = "smollm2"

#: Measured on an idle 2-core CPU (`make demo` from a fresh clone; `attnlab tour --full`, model cached):
#: quick 101 s with the SmolLM2 conversion, full 185 s (+50 s for the one-time GGUF conversion).
EXPECTED_SECONDS = {"quick": 105, "full": 240}


@dataclass(frozen=True)
class Profile:
    calibration: Calibration
    heldout_tokens: int
    ks: tuple[int, ...]
    configs: tuple[Config, ...]
    bench: bool = True  # whether the section measures speed (the settings below)
    bench_layers: int = 8
    prompt_lengths: tuple[int, ...] = (128,)
    batch_sizes: tuple[int, ...] = (1,)
    decode_tokens: int = 8
    repeats: int = 3


PAPER = (Config("nbl", "cca"), Config("drop", "cosine"))  # the paper's method and its baseline (Attention Drop)
PROFILES = {
    # k stops at 6: with a few thousand calibration tokens CCA admits layer 0 from k = 8 on, whose map then
    # needs far more text (docs/nbl.md); the speed table (a 5% FLOP ceiling on this model) is left to --full
    "quick": Profile(Calibration("builtin", 4096, 256, 8), heldout_tokens=1024, ks=(2, 4, 6), configs=PAPER,
                     bench=False),
    "full": Profile(Calibration("builtin", 8192, 256, 8), heldout_tokens=2048, ks=(4, 8),
                    configs=PAPER + (Config("nbl", "cosine"), Config("nbl", "cca", sequential=True))),
}


def _calibration_flags(c: Calibration) -> list[str]:
    return ["--data", c.source, "--tokens", str(c.tokens), "--seq-len", str(c.seq_len),
            "--batch-size", str(c.batch_size)]


def commands(profile: Profile) -> dict[str, str]:
    """The CLI commands that reproduce each table and figure of the section."""
    cal = _calibration_flags(profile.calibration)
    words = {
        "rank": ["attnlab", "nbl", "rank", MODEL, *cal, "-o", "runs/nbl-rank"],
        "compare": ["attnlab", "nbl", "compare", MODEL, "--layers", *map(str, profile.ks),
                    "--configs", *(c.label for c in profile.configs), "--heldout-tokens", str(profile.heldout_tokens),
                    *cal, "-o", "runs/nbl-compare"],
        "apply": ["attnlab", "nbl", "apply", MODEL, "--layers", str(profile.bench_layers), *cal,
                  "-o", f"runs/{MODEL}-nbl{profile.bench_layers}"],
        "bench": ["attnlab", "nbl", "bench", f"runs/{MODEL}-nbl{profile.bench_layers}", "--against", MODEL,
                  "--prompt-lengths", *map(str, profile.prompt_lengths),
                  "--batch-sizes", *map(str, profile.batch_sizes), "--decode-tokens", str(profile.decode_tokens),
                  "--repeats", str(profile.repeats), "-o", "runs/nbl-bench"],
    }
    return {name: shlex.join(w) for name, w in words.items()}


def tour(out_dir: Path, seed: int = 0, full: bool = False) -> RunRecord:
    from .bench import bench_pair
    from .experiment import perplexity_vs_layers
    from .pipeline import linearize, rank_table
    from .report import add_perplexity, add_rank, add_speed
    from .session import Session

    name = "full" if full else "quick"
    profile = PROFILES[name]
    cmd = commands(profile)
    out_dir = Path(out_dir)
    rec = RunRecord(name="nbl", title="nbl: Neural Block Linearization of SmolLM2-135M",
                    command="attnlab tour --only nbl" + (" --full" if full else ""), seed=seed,
                    config={"profile": name, "model": MODEL, "calibration": profile.calibration.to_dict(),
                            "heldout_tokens": profile.heldout_tokens, "ks": list(profile.ks),
                            "configs": [c.label for c in profile.configs]})
    progress = sys.stderr.isatty()
    with rec.timed("load"):
        session = Session.open(MODEL)
    with rec.timed("statistics"):
        stats, _ = session.stats(profile.calibration, progress=progress)
    with rec.timed("rank"):
        add_rank(rec, rank_table(stats), out_dir, cmd["rank"], "SmolLM2-135M")
    with rec.timed("perplexity_vs_layers"):
        rows = perplexity_vs_layers(session, profile.calibration, profile.heldout_tokens, list(profile.ks),
                                    profile.configs, progress=progress)
        add_perplexity(rec, rows, out_dir, cmd["compare"], "SmolLM2-135M")
    if profile.bench:
        with rec.timed("bench"):
            model = copy.deepcopy(session.model)
            linearize(model, stats, profile.bench_layers, "cca")
            speed = bench_pair(model, session.model, list(profile.prompt_lengths), list(profile.batch_sizes),
                               profile.decode_tokens, profile.repeats, seed=seed)
            add_speed(rec, speed, f"{cmd['apply']} && {cmd['bench']}")
    rec.notes.append(f"{name} profile: {profile.calibration.tokens} calibration tokens, {profile.heldout_tokens} "
                     f"held-out tokens, k = {', '.join(map(str, profile.ks))}, configurations "
                     f"{', '.join(c.label for c in profile.configs)}"
                     + ("." if full else "; `attnlab tour --full` runs the longer version (twice the calibration "
                                         "text, two more configurations, k = 4 and 8, and the speed table)."))
    rec.notes.append("benchmarks/nbl.py runs the large experiment (102,400 calibration tokens, k = 4, 8, 12); its "
                     "results are in docs/nbl.md.")
    rec.notes.append("SmolLM2 weights come from a Q4_1 GGUF (4-bit degraded), so perplexities are not the published "
                     "ones.")
    return rec
