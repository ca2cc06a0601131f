"""``attnlab memorize``: search m* (and save the memorizing prompt), verify a saved prompt, run a sweep, plot a
sweep, search through PEFT on a HF causal LM.

The flags of one search are generated from :data:`attnlab.memorize.settings.SETTINGS` (types, ranges, help and
the registries behind ``choices=``); this module imports neither torch nor the heavy submodules until a
command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
    nonneg_float,
    nonneg_int,
    out_folder,
    positive_int,
    show_progress,
    unit_float,
)
from ..core.errors import AttnlabError
from .settings import DEFAULTS, METHODS, SETTINGS, part_seed

#: Settings the PEFT search does not use (its model is loaded or built as a Llama, without generation steps; its
#: logits always cover the whole vocabulary; it searches with restarts, not p(m)).
_NOT_PEFT = ("gen_steps", "norm", "init", "train_steps", "backbone_draw", "readout", "prompt_seeds", "short_steps")
#: ``verify``'s exit code when the saved prompt does not reproduce every target (the project's "mismatch").
MISMATCH = 4


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
    p.add_argument("--q", type=unit_float, default=0.5,
                   help="with --prompt-seeds: the p(m) level of m*_q (default 0.5)")
    p.add_argument("--n-boot", type=positive_int, default=2000,
                   help="with --prompt-seeds: bootstrap resamples for m*_q's interval")
    p.add_argument("--margin", type=nonneg_float, default=0.0,
                   help="train on past the first exact step until every target beats every other token by this many "
                        "logits (default 0: stop at the first exact step); lets another forward path (float64, "
                        "generate) round differently without flipping an argmax")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="write the memorizing prompt at m* as a kept folder: DIR/backbone (the backbone as a "
                        "transformers GPT-2), DIR/data (safetensors + JSON), DIR/adapter (a PEFT prompt-tuning "
                        "adapter); checked with `attnlab memorize verify DIR` (--overwrite replaces one; when "
                        "nothing memorizes, exit 2 and nothing is written)")
    add_device(p, dtype=True)
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("verify", parents=[common], help="re-check a saved memorizing prompt in float64",
                       description="Loads DIR/backbone with transformers and DIR/adapter with peft, runs one plain "
                                   "float64 forward (no cache) over every saved input, and reports whether the "
                                   "argmax over the whole vocabulary is the target at every scored position, how "
                                   "many targets are reproduced, the smallest logit margin, and how many targets "
                                   "transformers' greedy generate reproduces. Exit 4 when not exact (or generate "
                                   "misses a target), 2 for a folder that is not a saved prompt.",
                       epilog="Example: attnlab memorize search --n-pairs 8 --seq-len 4 --margin 0.5 --save "
                              "runs/prompt && attnlab memorize verify runs/prompt --json")
    p.add_argument("folder", help="a folder written by `attnlab memorize search --save`")
    p.set_defaults(func=_cmd_verify)

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
    _register_capacity(sub, common)


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

    def wrapped(m: int, restart: int | list[int]) -> Any:
        """A probe (m, restart) or a batch probe (m, [restarts]): one bar step per fit."""
        bar.set_postfix(m=m, restart=restart)
        rec = probe(m, restart)
        bar.update(len(restart) if isinstance(restart, list) else 1)
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
    emit(args, result, text="\n".join(lines + _saved_line(result)))


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
    return ["--q", str(args.q), "--n-boot", str(args.n_boot)]


def _pm_budgets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The p(m) estimates of a result: at max_steps, then at short_steps when there is one."""
    return [result["p_of_m"], *([result["p_of_m_short"]] if "p_of_m_short" in result else [])]


def _pm_line(pm: dict[str, Any]) -> str:
    lo, hi = pm["ci"]
    return (f"m*_{pm['q']:g} = {pm['m_star']}" + ("" if pm["m_star"] else f" (none up to m_max={pm['m_max']})")
            + f" within {pm['budget']} steps, {pm['level']:.0%} bootstrap interval "
            + ("beyond m_max" if lo is None else f"{lo}..{'beyond m_max' if hi is None else hi}")
            + f" ({pm['n_seeds']} prompt seeds per length)")


def _report_pm(args, result: dict[str, Any]) -> None:
    budgets = _pm_budgets(result)
    lines = [_pm_line(pm) for pm in budgets]
    lines += [f"  m={m:<4} " + "  ".join(f"p(m)={pm['p'][m]:.2f} @ {pm['budget']}" for pm in budgets)
              for m in budgets[0]["p"]]
    if result.get("record"):
        lines.append(f"record {result['record']}")
    emit(args, result, text="\n".join(lines + _saved_line(result)))


def _save_pm_record(out: Path, command: str, result: dict[str, Any], config: dict[str, Any]) -> None:
    """``out/record.json`` for a p(m) estimate: m*_q and its interval at each budget, p(m) at every length tried."""
    from ..core.records import RunRecord

    budgets = _pm_budgets(result)
    pm = budgets[0]
    rec = RunRecord(name="memorize-search-p", title=f"memorize: p(m) for n_pairs={config['n_pairs']}, "
                    f"seq_len={config['seq_len']}", command=command, seed=config["seed"], config=config,
                    metrics={"m_star_q": pm["m_star"], "q": pm["q"], "ci": pm["ci"], "level": pm["level"],
                             "n_seeds": pm["n_seeds"], "budget": pm["budget"], "n_probes": len(result["probes"]),
                             **({"short_budget": budgets[1]["budget"], "m_star_q_short": budgets[1]["m_star"],
                                 "ci_short": budgets[1]["ci"]} if len(budgets) > 1 else {})})
    rec.add_table("p(m): share of prompt seeds that memorize within each step budget",
                  ["m", *(f"p(m) within {b['budget']} steps" for b in budgets), "memorized of"],
                  [[m, *(round(b["p"][m], 4) for b in budgets), f"{sum(pm['outcomes'][m])}/{pm['n_seeds']}"]
                   for m in pm["p"]])
    rec.notes.append(f"m*_q is the smallest prompt length tried (doubling, then bisection on p(m), once per budget) "
                     f"where at least q = {pm['q']:g} of {pm['n_seeds']} prompt seeds memorize exactly within the "
                     "budget's Adam steps; the shorter budget is read off the same fits; the interval resamples "
                     "each length's seeds.")
    rec.save(out / "record.json")


def _saving(args: argparse.Namespace) -> contextlib.AbstractContextManager[Path | None]:
    """The ``--save`` folder (checked on entry, swapped in whole on success) or nothing."""
    if args.save is None:
        return contextlib.nullcontext()
    from ..core.outputs import artifact_dir
    from .artifact import KIND

    return artifact_dir(args.save, args.overwrite, what=KIND)


def _save_prompt(folder: Path | None, backbone, data, settings: dict[str, Any], command: str, m_star: int | None,
                 probes: list[dict[str, Any]], prompts: dict | None, key: str) -> None:
    """Write the first memorizing prompt at ``m_star`` (probe field ``key`` names its restart) into ``folder``."""
    if folder is None or prompts is None:
        return
    from .artifact import save_artifact

    if m_star is None:
        raise AttnlabError(f"nothing memorized up to m_max={settings['m_max']}: no prompt to --save (raise --m-max "
                           "or --max-steps)")
    win = next(p for p in probes if p["m"] == m_star and p["memorized"])
    save_artifact(folder, backbone, data, prompts[(m_star, win[key])],
                  {"command": command, "settings": settings, "fit": dict(win)})


def _cmd_search(args: argparse.Namespace) -> int:
    from .backbone import Backbone
    from .gpt2 import check_convertible
    from .search import backbone_probe, search_min_length
    from .sweep import build

    device, dtype = _device(args)
    settings = _settings(args)
    data, cfg, tune = build(settings)
    tune = dataclasses.replace(tune, margin=args.margin)
    backbone = Backbone(cfg).to(device, dtype)
    if args.save is not None:
        check_convertible(backbone, settings["gen_steps"])
    prompts = {} if args.save is not None else None  # (m, restart) -> memorizing prompt, kept only for --save
    if settings["prompt_seeds"] is not None:
        return _search_pm(args, settings, backbone, data, tune, device, prompts)
    command = shlex.join(["attnlab", "memorize", "search", *_setting_argv(settings), *_margin_argv(args),
                          *_device_argv(args)])
    with _saving(args) as saved, out_folder(args, "memorize search") as out:
        probe, bar = _progress_probe(backbone_probe(backbone, data, settings["gen_steps"], tune,
                                                    part_seed(settings, "prompt"), prompts), "memorize search",
                                     show_progress(args))
        res = search_min_length(probe, settings["m_max"], settings["restarts"], settings["m_start"])
        bar.close()
        result = {**res.to_dict(), "trainable_params": res.m_star and res.m_star * cfg.d_model, "settings": settings,
                  "margin": args.margin, "device": device, "dtype": args.dtype}
        _save_prompt(saved, backbone, data, settings, command, res.m_star, res.probes, prompts, "restart")
        if out is not None:
            _save_record(out, "memorize-search", f"memorize: m* for n_pairs={settings['n_pairs']}, "
                         f"seq_len={settings['seq_len']}", command, settings["seed"], result,
                         {**settings, "margin": args.margin, "device": device, "dtype": args.dtype})
    _finish(args, result)
    _report(args, result)
    return 0


def _margin_argv(args: argparse.Namespace) -> list[str]:
    return ["--margin", str(args.margin)] if args.margin else []


def _finish(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Where the record and the saved prompt went, and the saved prompt's float64 check."""
    if args.out is not None:
        result["record"] = str(Path(args.out) / "record.json")
    if args.save is not None:
        from .artifact import verify

        result["saved"] = {"folder": args.save, "verify": verify(args.save)}


def _saved_line(result: dict[str, Any]) -> list[str]:
    if not result.get("saved"):
        return []
    v = result["saved"]["verify"]
    return [f"saved {result['saved']['folder']}: float64 check {'exact' if v['exact'] else 'NOT exact'}, "
            f"{v['targets_reproduced']}/{v['n_targets']} targets, smallest margin {v['min_margin']:.4g}"]


def _search_pm(args: argparse.Namespace, settings: dict[str, Any], backbone, data, tune, device: str,
               prompts: dict | None) -> int:
    """``search --prompt-seeds N``: :func:`attnlab.memorize.search.p_of_m_search`, N prompt seeds per length fitted
    as one batch, at ``--max-steps`` (and ``--short-steps``)."""
    from .search import backbone_batch_probe, p_of_m_search
    from .sweep import budgets

    command = shlex.join(["attnlab", "memorize", "search", *_setting_argv(settings), *_pm_argv(args),
                          *_margin_argv(args), *_device_argv(args)])
    with _saving(args) as saved, out_folder(args, "memorize search") as out:
        probe, bar = _progress_probe(backbone_batch_probe(backbone, data, settings["gen_steps"], tune,
                                                          part_seed(settings, "prompt"), prompts), "memorize p(m)",
                                     show_progress(args))
        pms, probes = p_of_m_search(probe, settings["m_max"], settings["prompt_seeds"], budgets(settings), args.q,
                                    settings["m_start"], args.n_boot, settings["seed"])
        bar.close()
        result = {"p_of_m": pms[0].to_dict(), **({"p_of_m_short": pms[1].to_dict()} if len(pms) > 1 else {}),
                  "probes": probes,
                  "settings": settings, "margin": args.margin, "device": device, "dtype": args.dtype}
        _save_prompt(saved, backbone, data, settings, command, pms[0].m_star, probes, prompts, "restart")
        if out is not None:
            _save_pm_record(out, command, result, {**settings, "margin": args.margin, "device": device,
                                                   "dtype": args.dtype})
    _finish(args, result)
    _report_pm(args, result)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .artifact import verify

    r = verify(args.folder)
    emit(args, r, text=f"{args.folder}: {'exact' if r['exact'] else 'NOT exact'} in float64 (argmax over the whole "
                       f"vocabulary): {r['targets_reproduced']}/{r['n_targets']} targets, {r['examples_reproduced']}/"
                       f"{r['n_examples']} examples, smallest margin {r['min_margin']:.6g}; greedy generate "
                       f"reproduces {r['generated_reproduced']}/{r['n_targets']}")
    return 0 if r["exact"] and r["generated_reproduced"] == r["n_targets"] else MISMATCH


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


def _register_capacity(sub, common) -> None:
    """``attnlab memorize capacity`` (issue 14, item 5; :mod:`attnlab.memorize.capacity`)."""
    from ..core.clikit import positive_float
    from .capacity import M_VALUES, CapacityConfig

    d = CapacityConfig()
    p = sub.add_parser("capacity", parents=[common], help="tokens of held-out text one prompt of m vectors reproduces",
                       description="Prompt tuning of a frozen causal LM (m vectors prepended to the input embeddings) "
                                   "on windows of held-out text of the built-in corpus: for each m and seed, the "
                                   "largest N whose first N tokens the teacher-forced argmax over the whole "
                                   "vocabulary reproduces within --max-steps Adam steps (doubling, then bisection), "
                                   "checked with transformers' greedy generate. Resumable: rerun to continue; more "
                                   "--m values or --seeds add searches to the folder.",
                       epilog="Example: attnlab memorize capacity --m 1 2 4 --seeds 3 --max-steps 100 --n-max 256 "
                              "-o runs/capacity --threads 1")
    p.add_argument("--model", default=d.model, help=f"packaged name or local HF directory (default {d.model})")
    p.add_argument("--m", dest="ms", type=positive_int, nargs="+", default=list(M_VALUES), metavar="M",
                   help="prompt lengths (default " + " ".join(map(str, M_VALUES)) + ")")
    p.add_argument("--seeds", type=positive_int, default=d.seeds,
                   help=f"seeds 0..K-1, each its own text window and prompt init (default {d.seeds})")
    p.add_argument("--max-steps", type=positive_int, default=d.max_steps,
                   help=f"Adam steps per fit, the budget that defines the capacity (default {d.max_steps})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--clip", type=positive_float, default=d.clip, help=f"gradient-norm clip (default {d.clip})")
    p.add_argument("--n-max", type=positive_int, default=d.n_max,
                   help=f"longest text tried, in tokens (default {d.n_max})")
    p.add_argument("--n-start", type=positive_int, default=d.n_start,
                   help=f"first text length of the doubling (default {d.n_start})")
    p.add_argument("--n-step", type=positive_int, default=d.n_step,
                   help="resolution: only multiples of this many tokens are tried, the capacity is within "
                        f"n_step - 1 of the exact one, in fewer probes (default {d.n_step}: exact)")
    p.add_argument("--text", default=d.text,
                   help="text source whose held-out split is used: builtin, builtin:F, a .txt or .jsonl file "
                        f"(default {d.text})")
    add_out(p, required=True, what="capacity run folder")
    add_grid(p, what="search")
    add_device(p, dtype=True)
    p.set_defaults(func=_cmd_capacity)


def _rounded(interval: list[float] | None) -> list[float] | None:
    return None if interval is None else [round(x, 1) for x in interval]


def _cmd_capacity(args: argparse.Namespace) -> int:
    from ..core.records import RunRecord
    from ..core.text import describe
    from .capacity import CapacityConfig, plot, run_capacity, summarize

    config = CapacityConfig(model=args.model, ms=tuple(args.ms), seeds=args.seeds, max_steps=args.max_steps,
                            lr=args.lr, clip=args.clip, n_max=args.n_max, n_start=args.n_start, n_step=args.n_step,
                            text=args.text,
                            dtype=args.dtype)
    device, _ = _device(args)
    options = {**grid_options(args), "workers": args.workers or 1}
    rows = run_capacity(config, args.out, overwrite=args.overwrite, device=device, **options)
    command = shlex.join(["attnlab", "memorize", "capacity", "--model", args.model, "--m", *map(str, args.ms),
                          "--seeds", str(args.seeds), "--max-steps", str(args.max_steps), "--lr", str(args.lr),
                          "--clip", str(args.clip), "--n-max", str(args.n_max), "--n-start", str(args.n_start),
                          "--n-step", str(args.n_step), "--text", args.text, "-o", args.out, *_device_argv(args)])
    out = Path(args.out)
    table = summarize(rows)
    rec = RunRecord(name="memorize-capacity", title=f"memorize: tokens of held-out text per prompt of m vectors "
                    f"({args.model})", command=command, seed=args.seed,
                    config={**dataclasses.asdict(config), "device": device,
                            "heldout_text": describe(args.text, "heldout")},
                    metrics={"summary": table, "searches": len(rows)})
    rec.add_table("capacity: the largest N reproduced exactly within the step budget, per seed",
                  ["m", "tokens per seed", "mean", "95% interval", "tokens per vector", "generate reproduces",
                   "gain over the previous m, paired by seed", "its 95% interval"],
                  [[t["m"], " ".join(map(str, t["capacity"])) + (" (n_max reached)" if t["censored"] else ""),
                    round(t["mean"], 1), _rounded(t["ci"]), round(t["tokens_per_vector"], 1), t["generated_exact"],
                    None if t["gain"] is None else round(t["gain"]["mean"], 1),
                    None if t["gain"] is None else _rounded(t["gain"]["ci"])] for t in table])
    rec.add_table("searches", ["m", "seed", "capacity", "steps", "loss", "smallest margin", "probes", "seconds"],
                  [[r["m"], r["seed"], r["capacity"], r["steps"], r["loss"], r["min_margin"], r["n_probes"],
                    r["probe_seconds"]] for r in rows])
    rec.notes.append(f"capacity = the largest N whose first N tokens the teacher-forced argmax over the whole "
                     f"vocabulary reproduces (t_1 from the prompt alone) within {config.max_steps} Adam steps, "
                     "searched by doubling then bisection (it assumes passing is monotone in N); the interval is a "
                     "Student-t interval of the mean over seeds.")
    if rows:
        fig = plot(rows, out / "capacity.png", f"{args.model}: prompt tuning on held-out text, "
                   f"{config.max_steps} steps")
        rec.add_figure(fig.name, "tokens reproduced exactly against m (each seed, and the mean)")
    path = rec.save(out / "record.json")
    lines = [f"{t['m']:>3} vectors: " + " ".join(map(str, t["capacity"])) + f" tokens, mean {t['mean']:.1f}"
             + ("" if t["ci"] is None else f" (95% {t['ci'][0]:.1f}..{t['ci'][1]:.1f})")
             + f", {t['tokens_per_vector']:.1f} per vector" + (", n_max reached" if t["censored"] else "")
             + ("" if t["gain"] is None else f", {t['gain']['mean']:+.1f} over m = {t['gain']['from_m']} (paired)")
             for t in table]
    emit(args, {"out": args.out, "record": str(path), "summary": table, "rows": rows},
         text="\n".join(lines + [f"record {path}"]))
    return 0
