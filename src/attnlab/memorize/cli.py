"""``attnlab memorize``: search m*, run a sweep, plot a sweep, search through PEFT on a HF causal LM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.clikit import add_out, emit, nonneg_int, positive_float, positive_int

_SETTING_FLAGS: list[tuple[str, Any, str]] = [
    ("n_pairs", positive_int, "number of sequences to memorize"),
    ("seq_len", positive_int, "tokens per sequence"),
    ("vocab", positive_int, "input vocabulary"),
    ("n_classes", positive_int, "label classes"),
    ("gen_steps", nonneg_int, "autoregressive generation steps T before the answer is read"),
    ("d_model", positive_int, "backbone width"),
    ("n_heads", positive_int, "attention heads"),
    ("n_layers", positive_int, "transformer blocks"),
    ("d_ff", positive_int, "MLP hidden width"),
    ("gain", positive_float, "init scale: weights ~ N(0, gain^2/fan_in)"),
    ("train_steps", positive_int, "pretraining steps for --init trained"),
    ("lr", positive_float, "Adam learning rate for the prompt"),
    ("clip", positive_float, "gradient-norm clip"),
    ("max_steps", positive_int, "step budget per probe (part of the definition of m*)"),
    ("m_max", positive_int, "largest prompt length tried"),
    ("restarts", positive_int, "prompt initialisations tried before a length is declared failed"),
    ("m_start", positive_int, "first length of the doubling (shorter ones are taken to fail if it fails)"),
]


def _add_settings(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    for name, kind, help_text in _SETTING_FLAGS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults[name],
                       help=f"{help_text} (default {defaults[name]})")
    p.add_argument("--rank", type=positive_int, default=None, help="low-rank labels of this rank (default: random)")
    p.add_argument("--target", choices=("last", "every"), default=defaults["target"],
                   help="label at the last position, or memorize whole sequences (default last)")
    p.add_argument("--init", choices=("gaussian", "orthogonal", "identity", "trained"), default=defaults["init"],
                   help="backbone initialisation (default gaussian)")
    p.add_argument("--no-norm", action="store_true", help="drop the LayerNorms")


def register(subparsers, common) -> None:
    from .sweep import DEFAULTS

    group = subparsers.add_parser("memorize", help="minimal soft-prompt length for exact memorization (Wang & Lin 2025)",
                                  description="How short can a soft prompt be? Exact-memorization search for "
                                              "prompt-tuned frozen transformers.",
                                  epilog="Example: attnlab memorize search --n-pairs 64 --seq-len 8 --json")
    sub = group.add_subparsers(dest="memorize_command", metavar="SUBCOMMAND")

    p = sub.add_parser("search", parents=[common], help="find m* for one dataset and frozen backbone",
                       description="Doubling then bisection over the prompt length m, with restarts; prints m*, the "
                                   "memorizing probe's accuracy and steps, and every probe.",
                       epilog="Example: attnlab memorize search --n-pairs 64 --seq-len 8 --gen-steps 2 --json")
    _add_settings(p, DEFAULTS)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("sweep", parents=[common], help="run or resume a grid of searches from a YAML config",
                       description="Runs every point of the config (resumable JSONL: rerun to continue), then plots.",
                       epilog="Example: attnlab memorize sweep configs/memorize/cpu_sweep.yaml -o docs/results/memorize")
    p.add_argument("config", help="sweep YAML (see configs/memorize/)")
    add_out(p, required=True, what="sweep directory")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes, 1 thread each (default: config)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("plot", parents=[common], help="plots, fits and a run record for a sweep directory",
                       epilog="Example: attnlab memorize plot docs/results/memorize")
    p.add_argument("sweep_dir", help="a directory written by `attnlab memorize sweep`")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap resamples for the exponent's interval")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("peft", parents=[common], help="the same search through peft on a Hugging Face causal LM",
                       description="Prompt tuning or prefix tuning (peft) of a frozen HF causal LM; labels are token ids.",
                       epilog="Example: attnlab memorize peft --model smollm2 --method prompt --n-pairs 8 --seq-len 4 "
                              "--max-steps 100 --m-max 8 --json")
    p.add_argument("--model", default="random-llama",
                   help="packaged name (smollm2), local HF directory, or random-llama (default)")
    p.add_argument("--method", choices=("prompt", "prefix"), default="prompt", help="peft method (default prompt)")
    p.add_argument("--token-offset", type=nonneg_int, default=0,
                   help="add this to every data token id (skip special tokens of a real vocabulary)")
    _add_settings(p, DEFAULTS)
    p.set_defaults(func=_cmd_peft)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from .sweep import DEFAULTS

    s = {k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)}
    s["norm"] = not args.no_norm
    return {**DEFAULTS, **s}


def _progress_probe(probe, desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="probe", file=sys.stderr)

    def wrapped(m: int, restart: int) -> dict[str, Any]:
        bar.set_postfix(m=m, restart=restart)
        rec = probe(m, restart)
        bar.update()
        return rec

    return wrapped, bar


def _report(args, result: dict[str, Any]) -> None:
    lines = [f"m* = {result['m_star']}" + ("" if result["m_star"] else f" (none up to m_max={result['m_max']})"),
             f"exact accuracy {result['exact_accuracy']:.3f} after {result['steps']} steps; "
             f"{len(result['probes'])} probes in {result['seconds']:.1f} s"]
    lines += [f"  m={p['m']:<4} restart={p['restart']} memorized={p['memorized']!s:<5} steps={p['steps']:<5} "
              f"exact={p['exact_accuracy']:.3f}" for p in result["probes"]]
    emit(args, result, text="\n".join(lines))


def _cmd_search(args: argparse.Namespace) -> int:
    from .backbone import Backbone
    from .search import backbone_probe, search_min_length
    from .sweep import build

    settings = _settings(args)
    data, cfg, tune = build(settings)
    probe, bar = _progress_probe(backbone_probe(Backbone(cfg), data, settings["gen_steps"], tune, settings["seed"]),
                                 "memorize search")
    res = search_min_length(probe, settings["m_max"], settings["restarts"], settings["m_start"])
    bar.close()
    _report(args, {**res.to_dict(), "trainable_params": res.m_star and res.m_star * cfg.d_model, "settings": settings})
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .plots import plot_sweep
    from .sweep import load_config, run_sweep

    rows = run_sweep(load_config(args.config), args.out, workers=args.workers)
    summary, figures = plot_sweep(args.out, seed=args.seed)
    emit(args, {"sweep_dir": args.out, "points": len(rows), "summary": summary, "figures": [str(p) for p, _ in figures]},
         text=f"{len(rows)} searches in {args.out}; figures: " + ", ".join(str(p) for p, _ in figures))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from . import sweep_record

    rec = sweep_record(Path(args.sweep_dir), seed=args.seed, n_boot=args.n_boot)
    path = rec.save(Path(args.sweep_dir) / "record.json")
    pl = rec.metrics.get("power_law_alpha")
    emit(args, {"record": str(path), **rec.metrics, "figures": [f.path for f in rec.figures]},
         text=f"record {path}; " + (f"power-law exponent {pl:.3f} "
                                    f"(95% CI {rec.metrics['power_law_ci95'][0]:.3f}..{rec.metrics['power_law_ci95'][1]:.3f})"
                                    if pl is not None else "no scaling fit yet"))
    return 0


def _cmd_peft(args: argparse.Namespace) -> int:
    from .peft_adapter import PeftMemorizeConfig, load_model, peft_search
    from .sweep import build

    settings = _settings(args)
    data, _, tune = build({**settings, "gen_steps": 0})
    model = load_model(args.model, settings, seed=args.seed)
    cfg = PeftMemorizeConfig(method=args.method, lr=tune.lr, clip=tune.clip, max_steps=tune.max_steps,
                             token_offset=args.token_offset)
    res = peft_search(model, data, cfg, m_max=settings["m_max"], restarts=settings["restarts"], seed=args.seed,
                      progress=True, m_start=settings["m_start"])
    _report(args, {**res.to_dict(), "model": args.model, "method": args.method, "settings": settings})
    return 0
