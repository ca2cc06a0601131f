"""``attnlab memorize``: search m*, run a sweep, plot a sweep, search through PEFT on a HF causal LM.

The flags of one search are generated from :data:`attnlab.memorize.settings.SETTINGS` (types, ranges, help and
the registries behind ``choices=``); this module imports neither torch nor the heavy submodules until a
command runs.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.clikit import (
    add_device,
    add_grid,
    add_out,
    emit,
    grid_options,
    nonneg_int,
    out_folder,
    positive_int,
    show_progress,
    unit_float,
)
from ..core.errors import require
from .settings import DEFAULTS, METHODS, SETTINGS, part_seed

#: Settings the PEFT search does not use (its model is loaded or built as a Llama, without generation steps).
_NOT_PEFT = ("gen_steps", "norm", "init", "train_steps", "backbone_draw")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _setting_type(name: str) -> Callable[[str], Any]:
    """The argparse type of a numeric setting: parses and range-checks with the setting's own rule."""
    setting = SETTINGS[name]

    def parse(text: str) -> Any:
        try:
            value = setting.kind(text)
        except ValueError:
            value = None
        if value is None or not setting.allows(value):
            raise argparse.ArgumentTypeError(f"must be {setting.expected(null=False)}, got {text!r}")
        return value

    return parse


def _add_settings(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    for name, s in SETTINGS.items():
        if name == "seed" or name in skip:  # --seed is a common flag
            continue
        if s.kind is bool:
            p.add_argument(_flag("no_" + name), dest=name, action="store_false", help=f"without {s.help}")
        elif s.kind is str:
            p.add_argument(_flag(name), choices=list(s.choices or {}), default=s.default,
                           help=f"{s.help}: " + "; ".join(f"{k}: {v}" for k, v in (s.choices or {}).items())
                           + f" (default {s.default})")
        else:
            p.add_argument(_flag(name), type=_setting_type(name), default=s.default,
                           help=s.help + ("" if s.default is None else f" (default {s.default})"))


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {**DEFAULTS, **{name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}}


def _setting_argv(settings: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """The flags (``--seed`` among them) that give exactly ``settings``, every one spelled out so that later
    default changes do not matter."""
    argv: list[str] = []
    for name, s in SETTINGS.items():
        value = settings[name]
        if name in skip or value is None or (s.kind is bool and value):
            continue
        argv += [_flag("no_" + name)] if s.kind is bool else [_flag(name), str(value)]
    return argv


def register(subparsers, common) -> None:
    group = subparsers.add_parser("memorize",
                                  help="minimal soft-prompt length for exact memorization (Wang & Lin 2025)",
                                  description="How short can a soft prompt be? Exact-memorization search for "
                                              "prompt-tuned frozen transformers.",
                                  epilog="Example: attnlab memorize search --n-pairs 64 --seq-len 8 --json")
    sub = group.add_subparsers(dest="memorize_command", metavar="SUBCOMMAND")

    p = sub.add_parser("search", parents=[common], help="find m* for one dataset and frozen backbone",
                       description="Doubling then bisection over the prompt length m, with restarts; prints m*, the "
                                   "memorizing probe's accuracy and steps, and every probe.",
                       epilog="Example: attnlab memorize search --n-pairs 64 --seq-len 8 --gen-steps 2 -o runs/search")
    _add_settings(p)
    p.add_argument("--n-prompt-seeds", type=positive_int, default=None, metavar="N",
                   help="m* as a statistic: fit N >= 5 prompt seeds at every length tried (instead of --restarts), "
                        "p(m) = the share that memorizes within --max-steps, m*_q = the smallest m with p(m) >= q, "
                        "with a bootstrap interval")
    p.add_argument("--q", type=unit_float, default=0.5, help="the p(m) level of m*_q (default 0.5)")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap resamples for m*_q's interval")
    add_device(p, dtype=True)
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("sweep", parents=[common], help="run or resume a grid of searches from a YAML config",
                       description="Runs every point of the config into a run folder (rerun the same command to "
                                   "resume; another config is refused), then plots and writes record.json there.",
                       epilog="Example: attnlab memorize sweep configs/memorize/cpu_sweep.yaml -o runs/memorize")
    p.add_argument("config", help="sweep YAML (see configs/memorize/)")
    add_out(p, required=True, what="sweep folder")
    add_grid(p, what="point", config=True)
    add_device(p, dtype=True)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("plot", parents=[common], help="plots, fits and a run record for a sweep folder",
                       description="Writes the figures and record.json of a sweep folder into that folder.",
                       epilog="Example: attnlab memorize plot runs/memorize")
    p.add_argument("sweep_dir", help="a folder written by `attnlab memorize sweep`")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap resamples for the exponent's interval")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("peft", parents=[common], help="the same search through peft on a Hugging Face causal LM",
                       description="Prompt tuning or prefix tuning (peft) of a frozen HF causal LM; labels are "
                                   "token ids.",
                       epilog="Example: attnlab memorize peft --model smollm2 --method prompt --n-pairs 8 --seq-len 4 "
                              "--max-steps 100 --m-max 8 --json")
    p.add_argument("--model", default="random-llama",
                   help="packaged name (smollm2), local HF directory, or random-llama (default)")
    p.add_argument("--method", choices=list(METHODS), default="prompt",
                   help="peft method: " + ", ".join(f"{k} ({v})" for k, v in METHODS.items()) + " (default prompt)")
    p.add_argument("--token-offset", type=nonneg_int, default=0,
                   help="add this to every data token id (skip special tokens of a real vocabulary)")
    _add_settings(p, skip=_NOT_PEFT)
    add_device(p, dtype=True)
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_peft)


def _device(args: argparse.Namespace) -> tuple[str, Any]:
    """(device, torch dtype) of a command, decided first: a device this machine lacks is a one-line error
    before anything is built or written."""
    from ..core.runtime import choose_device, torch_dtype

    return choose_device(args.device), torch_dtype(args.dtype)


def _device_argv(args: argparse.Namespace) -> list[str]:
    return ["--device", args.device, "--dtype", args.dtype]


def _progress_probe(probe, desc: str, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="probe", disable=not enabled)

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
    if result.get("record"):
        lines.append(f"record {result['record']}")
    emit(args, result, text="\n".join(lines))


def _save_record(out: Path, name: str, title: str, command: str, seed: int, result: dict[str, Any],
                 config: dict[str, Any]) -> None:
    """``out/record.json`` for one search: m* and its probe, and every probe as a table."""
    from ..core.records import RunRecord

    rec = RunRecord(name=name, title=title, command=command, seed=seed, config=config,
                    metrics={k: result[k] for k in ("m_star", "exact_accuracy", "steps", "m_max", "restarts",
                                                     "seconds", "trainable_params") if k in result})
    rec.metrics["n_probes"] = len(result["probes"])
    rec.add_table("probes of the search (doubling, then bisection)",
                  ["m", "restart", "memorized", "steps", "exact accuracy", "loss", "seconds"],
                  [[p["m"], p["restart"], p["memorized"], p["steps"], round(p["exact_accuracy"], 4),
                    round(p["loss"], 4), p["seconds"]] for p in result["probes"]])
    rec.notes.append(f"m* is the smallest prompt length that memorized exactly within {config['max_steps']} Adam "
                     f"steps for one of {config['restarts']} prompt initialisations; near m* the outcome of a fit "
                     "can change with the machine's rounding.")
    rec.save(out / "record.json")


def _pm_argv(args: argparse.Namespace) -> list[str]:
    return [] if args.n_prompt_seeds is None else ["--n-prompt-seeds", str(args.n_prompt_seeds), "--q", str(args.q),
                                                   "--n-boot", str(args.n_boot)]


def _report_pm(args, result: dict[str, Any]) -> None:
    pm = result["p_of_m"]
    lo, hi = pm["ci"]
    lines = [f"m*_{pm['q']:g} = {pm['m_star']}" + ("" if pm["m_star"] else f" (none up to m_max={pm['m_max']})")
             + f", {pm['level']:.0%} bootstrap interval "
             + ("beyond m_max" if lo is None else f"{lo}..{'beyond m_max' if hi is None else hi}")
             + f" ({pm['n_seeds']} prompt seeds per length, {result['settings']['max_steps']} steps each)"]
    lines += [f"  m={m:<4} p(m)={p:.2f}" for m, p in pm["p"].items()]
    if result.get("record"):
        lines.append(f"record {result['record']}")
    emit(args, result, text="\n".join(lines))


def _save_pm_record(out: Path, command: str, result: dict[str, Any], config: dict[str, Any]) -> None:
    """``out/record.json`` for a p(m) estimate: m*_q, its interval and p(m) at every length tried."""
    from ..core.records import RunRecord

    pm = result["p_of_m"]
    rec = RunRecord(name="memorize-search-p", title=f"memorize: p(m) for n_pairs={config['n_pairs']}, "
                    f"seq_len={config['seq_len']}", command=command, seed=config["seed"], config=config,
                    metrics={"m_star_q": pm["m_star"], "q": pm["q"], "ci": pm["ci"], "level": pm["level"],
                             "n_seeds": pm["n_seeds"], "n_probes": len(result["probes"])})
    rec.add_table("p(m): share of prompt seeds that memorize within the budget", ["m", "p(m)", "memorized of"],
                  [[m, round(p, 4), f"{sum(pm['outcomes'][m])}/{pm['n_seeds']}"] for m, p in pm["p"].items()])
    rec.notes.append(f"m*_q is the smallest prompt length tried (doubling, then bisection on p(m)) where at least "
                     f"q = {pm['q']:g} of {pm['n_seeds']} prompt seeds memorize exactly within {config['max_steps']} "
                     "Adam steps; the interval resamples each length's seeds.")
    rec.save(out / "record.json")


def _cmd_search(args: argparse.Namespace) -> int:
    from .backbone import Backbone
    from .search import backbone_probe, search_min_length
    from .statistic import MIN_SEEDS
    from .sweep import build

    device, dtype = _device(args)
    settings = _settings(args)
    data, cfg, tune = build(settings)
    if args.n_prompt_seeds is not None:
        require(args.n_prompt_seeds >= MIN_SEEDS,
                f"--n-prompt-seeds must be at least {MIN_SEEDS} for p(m) to mean anything, got {args.n_prompt_seeds}")
        return _search_pm(args, settings, Backbone(cfg).to(device, dtype), data, tune, device)
    with out_folder(args, "memorize search") as out:
        probe, bar = _progress_probe(backbone_probe(Backbone(cfg).to(device, dtype), data, settings["gen_steps"], tune,
                                                    part_seed(settings, "prompt")), "memorize search",
                                     show_progress(args))
        res = search_min_length(probe, settings["m_max"], settings["restarts"], settings["m_start"])
        bar.close()
        result = {**res.to_dict(), "trainable_params": res.m_star and res.m_star * cfg.d_model, "settings": settings,
                  "device": device, "dtype": args.dtype}
        if out is not None:
            command = shlex.join(["attnlab", "memorize", "search", *_setting_argv(settings), *_device_argv(args)])
            _save_record(out, "memorize-search", f"memorize: m* for n_pairs={settings['n_pairs']}, "
                         f"seq_len={settings['seq_len']}", command, settings["seed"], result,
                         {**settings, "device": device, "dtype": args.dtype})
    if args.out is not None:
        result["record"] = str(Path(args.out) / "record.json")
    _report(args, result)
    return 0


def _search_pm(args: argparse.Namespace, settings: dict[str, Any], backbone, data, tune, device: str) -> int:
    """``search --n-prompt-seeds N``: :func:`attnlab.memorize.statistic.estimate_m_star` over N prompt seeds."""
    from .search import backbone_probe
    from .statistic import estimate_m_star

    with out_folder(args, "memorize search") as out:
        probe, bar = _progress_probe(backbone_probe(backbone, data, settings["gen_steps"], tune,
                                                    part_seed(settings, "prompt")), "memorize p(m)",
                                     show_progress(args))
        probes: list[dict[str, Any]] = []

        def outcomes(m: int) -> list[bool]:
            recs = [{"m": m, "prompt": i, **probe(m, i)} for i in range(args.n_prompt_seeds)]
            probes.extend(recs)
            return [r["memorized"] for r in recs]

        pm = estimate_m_star(outcomes, settings["m_max"], args.n_prompt_seeds, args.q, settings["m_start"],
                             n_boot=args.n_boot, seed=settings["seed"])
        bar.close()
        result = {"p_of_m": pm.to_dict(), "probes": probes, "settings": settings, "device": device,
                  "dtype": args.dtype}
        if out is not None:
            command = shlex.join(["attnlab", "memorize", "search", *_setting_argv(settings), *_pm_argv(args),
                                  *_device_argv(args)])
            _save_pm_record(out, command, result, {**settings, "device": device, "dtype": args.dtype})
    if args.out is not None:
        result["record"] = str(Path(args.out) / "record.json")
    _report_pm(args, result)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .plots import sweep_record
    from .sweep import load_config, run_sweep

    device, _ = _device(args)
    rows = run_sweep(load_config(args.config), args.out, overwrite=args.overwrite, device=device, dtype=args.dtype,
                     **grid_options(args))
    command = shlex.join(["attnlab", "memorize", "sweep", args.config, "-o", args.out, "--seed", str(args.seed),
                          *_device_argv(args)])
    rec = sweep_record(Path(args.out), seed=args.seed, command=command)
    path = rec.save(Path(args.out) / "record.json")
    figures = [f.path for f in rec.figures]
    emit(args, {"sweep_dir": args.out, "points": len(rows), "record": str(path), **rec.metrics, "figures": figures},
         text=f"{len(rows)} searches in {args.out}; record {path}; figures: " + ", ".join(figures))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plots import sweep_record

    rec = sweep_record(Path(args.sweep_dir), seed=args.seed, n_boot=args.n_boot)
    path = rec.save(Path(args.sweep_dir) / "record.json")
    pl, ci = rec.metrics.get("power_law_alpha"), rec.metrics.get("power_law_ci95")
    fit = f"power-law exponent {pl:.3f} (95% CI {ci[0]:.3f}..{ci[1]:.3f})" if pl is not None else "no scaling fit yet"
    emit(args, {"record": str(path), **rec.metrics, "figures": [f.path for f in rec.figures]},
         text=f"record {path}; {fit}")
    return 0


def _cmd_peft(args: argparse.Namespace) -> int:
    from .peft_adapter import PeftMemorizeConfig, load_model, peft_search
    from .sweep import build

    device, dtype = _device(args)
    settings = _settings(args)
    data, _, tune = build(settings)
    cfg = PeftMemorizeConfig(method=args.method, lr=tune.lr, clip=tune.clip, max_steps=tune.max_steps,
                             token_offset=args.token_offset)
    with out_folder(args, "memorize peft") as out:
        model = load_model(args.model, settings, seed=part_seed(settings, "backbone")).to(device, dtype)
        res = peft_search(model, data, cfg, m_max=settings["m_max"], restarts=settings["restarts"],
                          seed=part_seed(settings, "prompt"), progress=show_progress(args),
                          m_start=settings["m_start"])
        result = {**res.to_dict(), "model": args.model, "method": args.method, "settings": settings,
                  "device": device, "dtype": args.dtype}
        if out is not None:
            command = shlex.join(["attnlab", "memorize", "peft", "--model", args.model, "--method", args.method,
                                  "--token-offset", str(args.token_offset), *_setting_argv(settings, _NOT_PEFT),
                                  *_device_argv(args)])
            config = {"model": args.model, "method": args.method, "token_offset": args.token_offset,
                      **{k: v for k, v in settings.items() if k not in _NOT_PEFT}, "device": device,
                      "dtype": args.dtype}
            _save_record(out, "memorize-peft", f"memorize: m* through peft {args.method} tuning of {args.model}",
                         command, args.seed, result, config)
    if args.out is not None:
        result["record"] = str(Path(args.out) / "record.json")
    _report(args, result)
    return 0
