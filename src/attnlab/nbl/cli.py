"""``attnlab nbl collect|rank|apply|compare|eval|bench|plan MODEL``: MODEL is a packaged name (smollm2, minilm) or a
local HF checkpoint directory.

Every command that computes a result writes its run record with ``-o DIR`` (``DIR/record.json``; ``apply``
puts it in the model folder); ``collect -o DIR`` writes the statistics folder.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..core.clikit import (
    add_device,
    add_grid,
    add_out,
    emit,
    grid_options,
    nonneg_float,
    nonneg_int,
    out_folder,
    positive_int,
    show_progress,
)
from ..core.errors import AttnlabError
from ..core.runtime import DTYPES
from .registry import METHODS, SELECTORS, Calibration, Config, choice_help

#: command name -> its parser, to write the command line that reproduces a record (:func:`_command`)
_PARSERS: dict[str, argparse.ArgumentParser] = {}
#: flags that change how a result is shown or stored, not the result
_PRESENTATION = {"json", "quiet", "progress", "debug", "overwrite", "help", "threads", "workers", "backend",
                 "ray_address"}


def _config(text: str) -> Config:
    try:
        return Config.parse(text)
    except AttnlabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _calibration_flags(p: argparse.ArgumentParser, stats: bool = True) -> None:
    g = p.add_argument_group("calibration")
    g.add_argument("--data", default="builtin", help="text: builtin, builtin:F (hold out a fraction F of the "
                   "topics), a .txt/.jsonl file or hf:NAME (default builtin); its calibration documents (80%%, by "
                   "a hash of each) are sampled in the order --seed shuffles them")
    g.add_argument("--tokens", type=positive_int, default=16384, help="calibration tokens (default 16384)")
    g.add_argument("--seq-len", type=positive_int, default=256, help="tokens per block (default 256)")
    g.add_argument("--batch-size", type=positive_int, default=8, help="blocks per forward pass (default 8)")
    if stats:
        g.add_argument("--stats", default=None,
                       help="statistics folder to use, or to resume (default: cached per model, data and code)")


def _memory(text: str) -> tuple[str, str]:
    """``--max-memory`` item: DEVICE=SIZE, DEVICE a GPU index, cpu or mps."""
    key, sep, size = text.partition("=")
    if not sep or not size or not (key.isdigit() or key in ("cpu", "mps")):
        raise argparse.ArgumentTypeError(f"expected DEVICE=SIZE (e.g. 0=70GiB cpu=100GiB), got {text!r}")
    return key, size


def _stats_device_flag(p) -> None:
    p.add_argument("--stats-device", choices=("layer", "cpu"), default="layer",
                   help="where the float64 statistics accumulate: layer (the device each layer runs on) or cpu "
                        "(streamed there, one copy per batch: when they do not fit beside the weights; default "
                        "layer)")


def _placement_flags(p: argparse.ArgumentParser, stats: bool = True) -> None:
    g = p.add_argument_group("models larger than one device")
    g.add_argument("--device-map", choices=("auto",), default=None,
                   help="auto: spread the model over the GPUs, then the CPU, then --offload-folder (accelerate); "
                        "each replaced layer's map and statistics stay on its layer's device")
    g.add_argument("--max-memory", type=_memory, nargs="+", default=None, metavar="DEVICE=SIZE",
                   help="with --device-map auto: the most each device may hold, e.g. 0=70GiB 1=70GiB cpu=200GiB")
    g.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="with --device-map auto: where the layers that fit nowhere else are kept on disk")
    if stats:
        _stats_device_flag(g)


def _open(args: argparse.Namespace, spec: str, device: str):
    """The :class:`~attnlab.nbl.session.Session` of ``spec`` on ``device`` or spread by ``--device-map``."""
    from .session import Session

    return Session.open(spec, device, args.dtype, args.device_map, dict(args.max_memory or []) or None,
                        args.offload_folder, None if getattr(args, "stats_device", "layer") == "layer" else "cpu")


def _calibration(args) -> Calibration:
    return Calibration(args.data, args.tokens, args.seq_len, args.batch_size, args.seed)


def _add(sub, name: str, common, help: str, example: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, parents=[common], help=help, description=help[0].upper() + help[1:] + ".",
                       epilog=f"Example: {example}")
    p.set_defaults(func=func)
    _PARSERS[name] = p
    return p


def register(subparsers, common) -> None:
    group = subparsers.add_parser("nbl", help="Neural Block Linearization: replace attention layers by linear maps",
                                  description="Neural Block Linearization (Erdogan, Tonin, Cevher 2025): collect "
                                  "calibration statistics, rank layers, replace the most linear attention layers "
                                  "by LMMSE maps, and measure quality and speed against the original.",
                                  epilog="Example: attnlab nbl apply smollm2 --layers 8 --selector cca "
                                         "-o out/smollm2-nbl8")
    sub = group.add_subparsers(dest="nbl_command", metavar="COMMAND")

    c = _add(sub, "collect", common, "stream calibration statistics into a folder (one safetensors file per layer)",
             "attnlab nbl collect smollm2 --tokens 100000 -o stats/smollm2", cmd_collect)
    c.add_argument("model", help="packaged model name (smollm2, minilm) or a local HF checkpoint directory")
    _calibration_flags(c, stats=False)
    add_out(c, what="statistics folder (default: the cache; a partial one resumes)")
    add_device(c, dtype=True)
    _placement_flags(c)

    r = _add(sub, "rank", common, "score every layer with every selector",
             "attnlab nbl rank smollm2 --json", cmd_rank)
    r.add_argument("model", help="packaged model name (smollm2, minilm) or a local HF checkpoint directory")
    _calibration_flags(r)
    add_out(r, what="record folder (DIR/record.json and DIR/nbl_scores.png; default: write nothing)")
    add_device(r, dtype=True)
    _placement_flags(r)

    a = _add(sub, "apply", common, "replace the k best layers and save the model",
             "attnlab nbl apply smollm2 --layers 8 --selector cca -o out/smollm2-nbl8", cmd_apply)
    a.add_argument("model", help="packaged model name (smollm2, minilm) or a local HF checkpoint directory")
    a.add_argument("--layers", type=positive_int, required=True, help="how many attention layers to replace")
    a.add_argument("--selector", choices=list(SELECTORS), default="cca",
                   help=f"layer score (default cca) — {choice_help(SELECTORS)}")
    a.add_argument("--method", choices=list(METHODS), default="nbl",
                   help=f"what replaces attention (default nbl) — {choice_help(METHODS)}")
    a.add_argument("--sequential", action="store_true", help="refit each layer through the model modified so far")
    a.add_argument("--ridge", type=nonneg_float, default=0.0, help="ridge, relative to the median eigenvalue of C_XX "
                   "(default 0; fewer than 4 d calibration tokens need one)")
    a.add_argument("--keep", type=nonneg_int, nargs="+", default=[], metavar="LAYER",
                   help="never replace these layers (e.g. --keep 0)")
    a.add_argument("--heldout-tokens", type=nonneg_int, default=4096,
                   help="tokens of --data's held-out split on which each map's error is measured as well "
                        "(default 4096; 0: calibration error only)")
    _calibration_flags(a)
    add_out(a, required=True, what="model folder (with its record.json)")
    add_device(a, dtype=True)
    _placement_flags(a)

    m = _add(sub, "compare", common, "held-out perplexity of several configurations at several k",
             "attnlab nbl compare smollm2 --layers 4 8 --configs nbl/cca drop/cosine -o runs/nbl-compare",
             cmd_compare)
    m.add_argument("model", help="packaged model name or a local HF checkpoint directory (a causal LM)")
    m.add_argument("--layers", type=positive_int, nargs="+", required=True, metavar="K",
                   help="numbers of attention layers to replace")
    m.add_argument("--configs", type=_config, nargs="+", required=True, metavar="CONFIG",
                   help="METHOD/SELECTOR[/sequential][/keepN] each, e.g. nbl/cca drop/cosine nbl/cca/keep0")
    m.add_argument("--heldout-tokens", type=positive_int, default=8192, help="held-out tokens (default 8192)")
    _calibration_flags(m)
    add_out(m, what="run folder (rows.jsonl resumes; record.json and nbl_perplexity.png at the end; default: "
                    "write nothing)")
    add_device(m, dtype=True)
    _placement_flags(m)
    add_grid(m, what="row")

    e = _add(sub, "eval", common, "held-out perplexity and agreement with the original",
             "attnlab nbl eval out/smollm2-nbl8 --against smollm2 --json", cmd_eval)
    e.add_argument("model", help="a folder written by `nbl apply` (or any checkpoint)")
    e.add_argument("--against", required=True, help="the original model")
    e.add_argument("--data", default="builtin", help="text source; its held-out split is used (default builtin)")
    e.add_argument("--split", choices=("heldout", "all"), default="heldout",
                   help="heldout: the documents --data holds out (disjoint from its calibration split); all: the "
                        "whole source, for text never calibrated on (default heldout). Either way, text holding a "
                        "calibration document recorded in MODEL's nbl.json is refused")
    e.add_argument("--tokens", type=positive_int, default=8192, help="held-out tokens (default 8192)")
    e.add_argument("--seq-len", type=positive_int, default=256, help="tokens per block (default 256)")
    e.add_argument("--batch-size", type=positive_int, default=8, help="blocks per forward pass (default 8)")
    e.add_argument("--greedy-tokens", type=nonneg_int, default=32, help="greedy continuation length (0: skip)")
    e.add_argument("--lm-eval", nargs="+", metavar="TASK", help="also run these lm-evaluation-harness tasks on "
                   "both models (needs `pip install lm_eval`)")
    e.add_argument("--lm-eval-include", metavar="DIR", help="a directory of your own lm-eval task YAMLs")
    e.add_argument("--lm-eval-limit", type=positive_int, metavar="N", help="at most N examples per task")
    add_out(e, what="record folder (DIR/record.json; default: write nothing)")
    add_device(e, dtype=True)
    _placement_flags(e, stats=False)

    b = _add(sub, "bench", common, "prefill and cached-decode throughput vs the original",
             "attnlab nbl bench out/smollm2-nbl8 --against smollm2 --json", cmd_bench)
    b.add_argument("model", help="a folder written by `nbl apply` (or any checkpoint)")
    b.add_argument("--against", required=True, help="the original model")
    b.add_argument("--prompt-lengths", type=positive_int, nargs="+", default=[128, 512],
                   help="prompt lengths in tokens (default 128 512)")
    b.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    b.add_argument("--decode-tokens", type=positive_int, default=16, help="timed decode steps (default 16)")
    b.add_argument("--repeats", type=positive_int, default=3, help="interleaved repeats, median kept (default 3)")
    add_out(b, what="record folder (DIR/record.json; default: write nothing)")
    add_device(b, dtype=True)
    _placement_flags(b, stats=False)

    pl = _add(sub, "plan", common, "the memory and FLOPs of the statistics pass, from the config alone (no weights)",
              "attnlab nbl plan smollm2 --dtype bfloat16 --max-memory 0=1GiB cpu=8GiB", cmd_plan)
    pl.add_argument("model", help="packaged model name, a local HF checkpoint directory or a config.json file")
    pl.add_argument("--dtype", default="float32", choices=DTYPES,
                    help="model compute precision (default float32)")
    pl.add_argument("--tokens", type=positive_int, default=16384, help="calibration tokens (default 16384)")
    pl.add_argument("--seq-len", type=positive_int, default=256, help="tokens per block (default 256)")
    pl.add_argument("--batch-size", type=positive_int, default=8, help="blocks per forward pass (default 8)")
    pl.add_argument("--max-memory", type=_memory, nargs="+", default=None, metavar="DEVICE=SIZE",
                    help="plan --device-map auto within these budgets, e.g. 0=70GiB 1=70GiB cpu=200GiB: each "
                         "layer's device and each device's model and statistics bytes")
    _stats_device_flag(pl)


def cmd_plan(args) -> int:
    from .plan import plan, render

    p = plan(args.model, args.dtype, args.tokens, args.seq_len, args.batch_size, dict(args.max_memory or []) or None,
             stats_device=None if args.stats_device == "layer" else "cpu")
    emit(args, p, text=render(p))
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces ``args``' result: positionals, then every option not at its default."""
    words = ["attnlab", "nbl", args.nbl_command]
    for action in _PARSERS[args.nbl_command]._actions:
        if action.dest in _PRESENTATION or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if not action.option_strings:
            words.append(str(value))
        elif value is not None and value != action.default:
            if isinstance(action, argparse._StoreTrueAction):
                words.append(action.option_strings[0])
            else:
                values = value if isinstance(value, list) else [value]
                words += [action.option_strings[0], *(getattr(v, "label", str(v)) for v in values)]
    return shlex.join(words)


def _device(args: argparse.Namespace) -> str:
    """The device of ``--device``, checked first: a device this machine lacks is refused before anything runs."""
    from ..core.runtime import choose_device

    return choose_device(args.device)


def _record(args: argparse.Namespace, title: str, config: dict):
    from ..core.records import RunRecord

    return RunRecord(name=f"nbl-{args.nbl_command}", title=f"nbl {args.nbl_command}: {title}",
                     command=_command(args), seed=args.seed, config=config)


def _stats_target(args: argparse.Namespace) -> tuple[Path | None, bool]:
    """``collect``'s ``-o`` folder, checked before the model loads: (path, start afresh). An existing statistics
    folder is refused unless ``--overwrite``, except a partial one, which resumes; any other existing path is
    refused."""
    from .stats import Stats

    if args.out is None:
        return None, args.overwrite
    path = Path(args.out)
    meta = Stats.peek(path)
    if meta is not None and not args.overwrite and meta.get("batches_done", 0) < meta.get("n_batches", 0):
        return path, False
    if meta is not None and not args.overwrite:
        raise AttnlabError(f"{path} holds statistics already; pass --overwrite to replace them, or choose another -o")
    if meta is None and path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise AttnlabError(f"{path} exists and is not a statistics folder; choose another -o (a new folder)")
    return path, True


def cmd_collect(args) -> int:

    device = _device(args)
    path, fresh = _stats_target(args)
    s = _open(args, args.model, device)
    stats, _ = s.stats(_calibration(args), path, progress=show_progress(args), quiet=args.quiet, fresh=fresh)
    emit(args, {"stats": stats.meta["path"], "layers": len(stats.layers), "tokens": stats.tokens,
                "fingerprint": stats.fingerprint},
         text=f"statistics of {len(stats.layers)} layers over {stats.tokens} tokens: {stats.meta['path']}")
    return 0


def cmd_rank(args) -> int:
    from .pipeline import rank_table
    from .report import add_rank

    device = _device(args)
    with out_folder(args, "nbl rank") as folder:
        s = _open(args, args.model, device)
        stats, _ = s.stats(_calibration(args), args.stats, progress=show_progress(args), quiet=args.quiet)
        rows = rank_table(stats)
        if folder is not None:
            rec = _record(args, f"per-layer scores of {args.model}",
                          {"model": args.model, "calibration": stats.meta.get("calibration"), "device": device,
                           "dtype": args.dtype, **s.placement})
            add_rank(rec, rows, folder, rec.command, args.model)
            rec.save(folder / "record.json")
    if args.json:
        emit(args, rows)
        return 0
    print(f"{'layer':>5} " + " ".join(f"{sel:>10}" for sel in SELECTORS) + "   (lower = replace first)")
    for row in rows:
        print(f"{row['layer']:>5} " + " ".join(f"{row[sel]:>10.4g}" for sel in SELECTORS))
    return 0


def _heldout_blocks(session, args):
    """The held-out text of ``apply``'s map errors, read before minutes of statistics (a source without held-out
    documents is refused, with the flag that skips it)."""
    try:
        return session.blocks(args.data, "heldout", args.heldout_tokens, args.seq_len)[0]
    except AttnlabError as e:
        raise AttnlabError(f"{e} (or pass --heldout-tokens 0 to skip the maps' held-out error)") from None


def cmd_apply(args) -> int:
    from ..core.hf import decoder_layers
    from ..core.outputs import artifact_dir
    from .estimator import NBL
    from .io import KIND, write
    from .pipeline import check_request, check_tokens

    device = _device(args)
    nbl = NBL(args.layers, args.selector, args.method, args.sequential, tuple(args.keep), args.ridge, args.tokens,
              args.seq_len, args.batch_size, args.seed, progress=show_progress(args))
    with artifact_dir(args.out, args.overwrite, what=KIND) as folder:
        s = _open(args, args.model, device)
        check_request(len(decoder_layers(s.model)), args.layers, tuple(args.keep))  # before minutes of statistics
        if args.method == "nbl":
            check_tokens(args.tokens // args.seq_len * args.seq_len, s.model.config.hidden_size, args.ridge)
        held = _heldout_blocks(s, args) if args.heldout_tokens and args.method == "nbl" else None
        stats, blocks = s.stats(_calibration(args), args.stats, progress=show_progress(args), quiet=args.quiet)
        nbl.fit(s.model, s.tokenizer, data=blocks, stats=stats)
        heldout = nbl.heldout_nmse(s.model, data=held) if held is not None else {}
        info = nbl.info(base_model=args.model, seed=args.seed, heldout_nmse=heldout,
                        heldout_tokens=args.heldout_tokens if heldout else 0)
        write(folder, s.checkpoint, nbl.maps_, info)
        rec = _record(args, f"{args.method} in {len(nbl.layers_)} layers of {args.model}",
                      {**info, "device": device, "dtype": args.dtype, **s.placement})
        rec.metrics.update({f"fitted_nmse_layer{m.layer}": m.nmse for m in nbl.maps_})
        rec.metrics.update({f"heldout_nmse_layer{i}": v for i, v in heldout.items()})
        fitted = {m.layer: m.nmse for m in nbl.maps_}
        rec.add_table("Replaced layers", ["layer", "replaced by", "calibration NMSE", "held-out NMSE"],
                      [[i, args.method, fitted.get(i), heldout.get(i)] for i in nbl.layers_])
        rec.save(folder / "record.json")
    result = {"out": str(args.out), "layers": nbl.layers_, "method": args.method, "selector": args.selector,
              "sequential": args.sequential, "fitted_nmse": fitted, "heldout_nmse": heldout}
    emit(args, result, text=f"replaced attention in layers {nbl.layers_} ({args.method}, {args.selector}"
                            f"{', sequential' if args.sequential else ''}); saved to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from ..core.hf import decoder_layers
    from ..core.outputs import run_dir
    from .experiment import perplexity_vs_layers
    from .pipeline import check_request, check_tokens
    from .report import add_perplexity

    device = _device(args)
    grid = grid_options(args, threads=None)  # one job at a time by default: keep torch's thread count
    for flag, values in (("--layers", args.layers), ("--configs", [c.label for c in args.configs])):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise AttnlabError(f"{flag}: {', '.join(twice)} given more than once")
    config = {"model": args.model, "calibration": _calibration(args).to_dict(), "heldout_tokens": args.heldout_tokens,
              "ks": args.layers, "configs": [c.label for c in args.configs], "seed": args.seed, "dtype": args.dtype}
    if args.stats is not None:  # part of the identity only when given, so older folders keep theirs
        config["stats"] = str(args.stats)
    folder = None
    if args.out is not None:  # the device is a runtime choice: a comparison started on a CPU resumes on a GPU
        folder, _ = run_dir(args.out, config, args.overwrite, what="nbl compare", quiet=args.quiet)
    config["device"] = device
    s = _open(args, args.model, device)
    config.update(s.placement)
    for c in args.configs:  # every request checked before minutes of statistics
        for k in args.layers:
            check_request(len(decoder_layers(s.model)), k, c.keep)
    if any(c.method == "nbl" for c in args.configs):
        check_tokens(args.tokens // args.seq_len * args.seq_len, s.model.config.hidden_size)
    rows = perplexity_vs_layers(s, _calibration(args), args.heldout_tokens, args.layers, args.configs,
                                log=folder / "rows.jsonl" if folder else None, stats_path=args.stats, **grid)
    complete = len(rows) == len(args.configs) * len(args.layers)  # else other processes hold the rest
    if folder is not None and complete:
        rec = _record(args, f"held-out perplexity of {args.model}", config)
        add_perplexity(rec, rows, folder, rec.command, args.model)
        rec.save(folder / "record.json")
    lines = [f"reference perplexity {rows[0]['reference_perplexity']:.3f}"] if rows else []
    lines += [f"{'config':<24} {'k':>3} {'ppl':>9} {'increase':>9} {'top-1':>7}  layers"]
    lines += [f"{r['label']:<24} {r['k']:>3} {r['perplexity']:>9.3f} {r['increase']:>+9.1%} "
              f"{r['top1_agreement']:>7.3f}  {r['layers']}" for r in rows]
    emit(args, {"rows": rows}, text="\n".join(lines))
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_pair
    from .lmeval import run_tasks, task_manager

    device = _device(args)
    manager = task_manager(args.lm_eval, args.lm_eval_include) if args.lm_eval else None
    with out_folder(args, "nbl eval") as folder:
        model, ref, record = _pair(args, device)
        result = evaluate_pair(model, ref, args.data, args.tokens, args.seq_len, args.batch_size, args.greedy_tokens,
                               progress=show_progress(args), split=args.split, record=record)
        if manager is not None:
            result["lm_eval"] = {name: run_tasks(s.model, s.tokenizer, args.lm_eval, manager, args.lm_eval_limit,
                                                 args.batch_size, args.seed)
                                 for name, s in (("model", model), ("reference", ref))}
        if folder is not None:
            rec = _record(args, f"{args.model} against {args.against}",
                          {"model": args.model, "against": args.against, "heldout": result["heldout"],
                           "device": device, "dtype": args.dtype, **model.placement})
            rec.metrics.update({k: v for k, v in result.items() if isinstance(v, (int, float))})
            rec.add_table(f"{args.model} against {args.against} on held-out text", ["metric", "value"],
                          [[k, v] for k, v in rec.metrics.items()])
            rec.save(folder / "record.json")
    emit(args, result)
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_pair
    from .report import add_speed

    device = _device(args)
    with out_folder(args, "nbl bench") as folder:
        model, ref, _ = _pair(args, device)
        result = bench_pair(model.model, ref.model, args.prompt_lengths, args.batch_sizes, args.decode_tokens,
                            args.repeats, seed=args.seed, progress=show_progress(args))
        if folder is not None:
            rec = _record(args, f"speed of {args.model} against {args.against}",
                          {"model": args.model, "against": args.against, "prompt_lengths": args.prompt_lengths,
                           "batch_sizes": args.batch_sizes, "decode_tokens": args.decode_tokens,
                           "repeats": args.repeats, "threads": result["threads"], "device": device,
                           "dtype": args.dtype, **model.placement})
            add_speed(rec, result, rec.command)
            rec.save(folder / "record.json")
    emit(args, result, text=result["table"])
    return 0


def _pair(args: argparse.Namespace, device: str):
    """Sessions for the (possibly linearized) candidate ``args.model`` and the original ``args.against``, and the
    candidate's ``nbl.json`` (None for a plain checkpoint)."""
    from .io import is_linearized, read_info

    candidate, against = args.model, args.against
    record = read_info(candidate) if is_linearized(candidate) else None  # a damaged one: refused before loading
    ref = _open(args, against, device)
    cand = _open(args, candidate, device)
    if cand.model.config.model_type != ref.model.config.model_type:
        raise AttnlabError(f"{candidate} ({cand.model.config.model_type}) and {against} "
                           f"({ref.model.config.model_type}) are different architectures")
    return cand, ref, record
