"""``attnlab nbl collect|rank|apply|eval|bench MODEL``: MODEL is a packaged name (smollm2, minilm) or a
local HF checkpoint directory."""

from __future__ import annotations

import argparse

from ..core.clikit import add_out, emit, nonneg_int, positive_int
from ..core.errors import AttnlabError
from .scores import SELECTORS


def _ridge(text: str) -> float:
    """``--ridge``: a finite number >= 0 (nan, inf and negative ridges are refused at parse time)."""
    from .fit import check_ridge

    try:
        return check_ridge(float(text))
    except (ValueError, AttnlabError):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}") from None


def _calibration_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration")
    g.add_argument("--data", default="builtin", help="text: builtin, a .txt/.jsonl file or hf:NAME (default builtin)")
    g.add_argument("--tokens", type=positive_int, default=16384, help="calibration tokens (default 16384)")
    g.add_argument("--seq-len", type=positive_int, default=256, help="tokens per block (default 256)")
    g.add_argument("--batch-size", type=positive_int, default=8, help="blocks per forward pass (default 8)")
    g.add_argument("--stats", default=None, help="statistics file to use/resume (default: cached per model and data)")


def _calibration(args):
    from .session import Calibration

    return Calibration(args.data, args.tokens, args.seq_len, args.batch_size)


def register(subparsers, common) -> None:
    p = subparsers.add_parser("nbl", help="Neural Block Linearization: replace attention layers by linear maps",
                              description="Neural Block Linearization (Erdogan, Tonin, Cevher 2025).")
    sub = p.add_subparsers(dest="nbl_command", metavar="COMMAND")

    c = sub.add_parser("collect", parents=[common], help="stream calibration statistics into a safetensors file",
                       epilog="Example: attnlab nbl collect smollm2 --tokens 100000 -o stats.safetensors")
    c.add_argument("model")
    _calibration_flags(c)
    add_out(c, what="statistics file (default: the cache)")
    c.set_defaults(func=cmd_collect)

    r = sub.add_parser("rank", parents=[common], help="score every layer with every selector",
                       epilog="Example: attnlab nbl rank smollm2 --json")
    r.add_argument("model")
    _calibration_flags(r)
    r.set_defaults(func=cmd_rank)

    a = sub.add_parser("apply", parents=[common], help="replace the k best layers and save the model",
                       epilog="Example: attnlab nbl apply smollm2 --layers 8 --selector cca -o out/smollm2-nbl8")
    a.add_argument("model")
    a.add_argument("--layers", type=positive_int, required=True, help="how many attention layers to replace")
    a.add_argument("--selector", choices=SELECTORS, default="cca", help="layer score (default cca, the paper's)")
    a.add_argument("--method", choices=("nbl", "drop"), default="nbl", help="linear map (nbl) or identity (drop)")
    a.add_argument("--sequential", action="store_true", help="refit each layer through the model modified so far")
    a.add_argument("--ridge", type=_ridge, default=0.0, help="ridge, relative to tr(C_XX)/d (default 0)")
    a.add_argument("--keep", type=nonneg_int, nargs="+", default=[], metavar="LAYER",
                   help="never replace these layers (e.g. --keep 0)")
    _calibration_flags(a)
    add_out(a, required=True, what="output directory")
    a.set_defaults(func=cmd_apply)

    e = sub.add_parser("eval", parents=[common], help="held-out perplexity and agreement with the original",
                       epilog="Example: attnlab nbl eval out/smollm2-nbl8 --against smollm2 --json")
    e.add_argument("model", help="a directory written by `nbl apply` (or any checkpoint)")
    e.add_argument("--against", required=True, help="the original model")
    e.add_argument("--data", default="builtin", help="text source; its held-out split is used (default builtin)")
    e.add_argument("--tokens", type=positive_int, default=8192, help="held-out tokens (default 8192)")
    e.add_argument("--seq-len", type=positive_int, default=256)
    e.add_argument("--batch-size", type=positive_int, default=8)
    e.add_argument("--greedy-tokens", type=nonneg_int, default=32, help="greedy continuation length (0: skip)")
    e.add_argument("--lm-eval", nargs="+", metavar="TASK", help="also run these lm-evaluation-harness tasks on "
                   "both models (needs `pip install lm_eval`)")
    e.add_argument("--lm-eval-include", metavar="DIR", help="a directory of your own lm-eval task YAMLs")
    e.add_argument("--lm-eval-limit", type=positive_int, metavar="N", help="at most N examples per task")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", parents=[common], help="prefill and cached-decode throughput vs the original",
                       epilog="Example: attnlab nbl bench out/smollm2-nbl8 --against smollm2 --json")
    b.add_argument("model")
    b.add_argument("--against", required=True)
    b.add_argument("--prompt-lengths", type=positive_int, nargs="+", default=[128, 512])
    b.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 4])
    b.add_argument("--decode-tokens", type=positive_int, default=16)
    b.add_argument("--repeats", type=positive_int, default=3)
    b.set_defaults(func=cmd_bench)


def cmd_collect(args) -> int:
    from .session import Session

    s = Session.open(args.model)
    stats, _ = s.stats(_calibration(args), args.out or args.stats)
    emit(args, {"stats": stats.meta["path"], "layers": len(stats.layers), "tokens": stats.tokens,
                "fingerprint": stats.fingerprint},
         text=f"statistics of {len(stats.layers)} layers over {stats.tokens} tokens: {stats.meta['path']}")
    return 0


def cmd_rank(args) -> int:
    from .pipeline import rank_table
    from .session import Session

    s = Session.open(args.model)
    stats, _ = s.stats(_calibration(args), args.stats)
    rows = rank_table(stats)
    if args.json:
        emit(args, rows)
        return 0
    print(f"{'layer':>5} " + " ".join(f"{sel:>10}" for sel in SELECTORS) + "   (lower = replace first)")
    for row in rows:
        print(f"{row['layer']:>5} " + " ".join(f"{row[sel]:>10.4g}" for sel in SELECTORS))
    return 0


def cmd_apply(args) -> int:
    from ..core.hf import decoder_layers
    from .io import save
    from .pipeline import check_request, linearize
    from .session import Session

    s = Session.open(args.model)
    check_request(len(decoder_layers(s.model)), args.layers, tuple(args.keep))  # before minutes of statistics
    stats, blocks = s.stats(_calibration(args), args.stats)
    layers, maps = linearize(s.model, stats, args.layers, args.selector, args.method, args.ridge, args.sequential,
                             blocks, args.batch_size, progress=not args.json, keep=tuple(args.keep))
    info = {"method": args.method, "selector": args.selector, "layers": sorted(layers), "sequential": args.sequential,
            "ridge": args.ridge, "keep": sorted(args.keep), "base_model": args.model, "base_fingerprint": s.fingerprint, "seed": args.seed,
            "calibration": stats.meta.get("calibration")}
    out = save(args.out, s.checkpoint, maps, info)
    result = {"out": str(out), "layers": sorted(layers), "method": args.method, "selector": args.selector,
              "sequential": args.sequential, "fitted_nmse": {m.layer: m.nmse for m in maps}}
    emit(args, result, text=f"replaced attention in layers {sorted(layers)} ({args.method}, {args.selector}"
                            f"{', sequential' if args.sequential else ''}); saved to {out}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_pair
    from .lmeval import run_tasks, task_manager

    manager = task_manager(args.lm_eval, args.lm_eval_include) if args.lm_eval else None
    model, ref = _pair(args.model, args.against)
    result = evaluate_pair(model, ref, args.data, args.tokens, args.seq_len, args.batch_size, args.greedy_tokens)
    if manager is not None:
        result["lm_eval"] = {name: run_tasks(s.model, s.tokenizer, args.lm_eval, manager, args.lm_eval_limit,
                                             args.batch_size, args.seed)
                             for name, s in (("model", model), ("reference", ref))}
    emit(args, result)
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_pair

    model, ref = _pair(args.model, args.against)
    result = bench_pair(model.model, ref.model, args.prompt_lengths, args.batch_sizes, args.decode_tokens, args.repeats,
                        progress=not args.json)
    emit(args, result, text=result["table"])
    return 0


def _pair(candidate: str, against: str):
    """Sessions for the (possibly linearized) candidate and the original."""
    from pathlib import Path

    from .io import linearize_loaded
    from .session import Session

    ref = Session.open(against)
    cand = Session.open(candidate)
    if (Path(candidate) / "nbl.json").exists():
        linearize_loaded(cand.model, candidate)
    if cand.model.config.model_type != ref.model.config.model_type:
        raise AttnlabError(f"{candidate} ({cand.model.config.model_type}) and {against} "
                           f"({ref.model.config.model_type}) are different architectures")
    return cand, ref
