"""``attnlab depth``: count an architecture exactly, plan a shape for a budget, measure separation ranks,
run and plot depth sweeps.

``count``, ``plan``, ``rank`` and ``plot`` are light (no torch); ``sweep`` trains models.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.clikit import add_device, add_grid, add_out, emit, grid_options, nonneg_int, out_folder, positive_int, size
from ..core.errors import AttnlabError

#: What ``count --family`` and ``plan --family`` accept (kept here so that parsing imports nothing heavy).
FAMILY_NAMES = ("gpt2", "bert", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
PLAN_FAMILIES = ("gpt", "llama", "kaplan")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with aligned columns."""
    cells = [[str(c) for c in columns]] + [["-" if v is None else f"{v:,}" if isinstance(v, int) and not
                                            isinstance(v, bool) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def register(subparsers, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("depth", help="depth/width trade-off of self-attention (Levine et al. 2020)",
                                  description="Depth-efficiency theory, a depth/width planner, exact separation "
                                              "ranks and fixed-budget depth sweeps.",
                                  epilog="Example: attnlab depth plan --params 1.3B --known")
    sub = group.add_subparsers(dest="depth_command", metavar="COMMAND")

    p = sub.add_parser("count", parents=[common], help="exact parameters and FLOPs per token of an architecture",
                       description="Exact parameter count (by part, non-embedding, total, Kaplan's 12 L d^2) and "
                                   "forward/training FLOPs per token (Kaplan et al. 2020, Table 1: 2N + 2 L n_ctx "
                                   "d_attn) of an HF config.json, a published model's name, or a shape given by "
                                   "flags; then where the shape sits among the depth laws.",
                       epilog="Example: attnlab depth count path/to/config.json --context 4096   "
                              "(or: attnlab depth count 'Llama-3 8B';  attnlab depth count --family llama "
                              "--layers 16 --width 2048 --ffn 8192 --heads 32 --kv-heads 8 --vocab 128256 --tied)")
    p.add_argument("config", nargs="?", default=None,
                   help="an HF config.json (or its folder), or a published model's name (see plan --known)")
    p.add_argument("--family", choices=sorted(FAMILY_NAMES), default=None,
                   help="architecture family of a shape given by flags")
    p.add_argument("--layers", type=positive_int, default=None, help="depth L")
    p.add_argument("--width", type=positive_int, default=None, help="width d (hidden size)")
    p.add_argument("--ffn", type=positive_int, default=None, help="feed-forward hidden size (default 4 d)")
    p.add_argument("--heads", type=positive_int, default=None, help="attention heads (default: width / 64, or 1)")
    p.add_argument("--kv-heads", type=positive_int, default=None, help="key/value heads (GQA; default: heads)")
    p.add_argument("--head-dim", type=positive_int, default=None, help="head dimension (default: width / heads)")
    p.add_argument("--vocab", type=positive_int, default=None, help="vocabulary size")
    p.add_argument("--seq-len", type=nonneg_int, default=0, help="learned positions (gpt2, bert)")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help="output head tied to the token embedding (default: the family's)")
    p.add_argument("--attention-bias", action="store_true", help="biases on the attention projections")
    p.add_argument("--mlp-bias", action="store_true", help="biases on the MLP (llama)")
    p.add_argument("--context", type=positive_int, default=None,
                   help="n_ctx for the FLOPs (default: the config's max positions / --seq-len)")
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_count, light=True)

    p = sub.add_parser("plan", parents=[common], help="depth and width for a parameter budget, rule by rule",
                       description="Recommend (depth, width) for each budget under Levine et al.'s fit and the "
                                   "other published rules, every shape counted exactly (--family). Without --vocab "
                                   "the budget is non-embedding parameters; with --vocab it is the total. The fit "
                                   "solved in its own 12 L d^2 convention is its own row (levine_fit_12Ld2).",
                       epilog="Example: attnlab depth plan --params 1.3B --vocab 50257 --seq-len 2048")
    p.add_argument("--params", type=size, nargs="+", required=True, metavar="N",
                   help="parameter budget(s), e.g. 1.3B, 350M or 1.3e9")
    p.add_argument("--vocab", type=positive_int, default=None, help="vocabulary size: count a tied embedding")
    p.add_argument("--seq-len", type=nonneg_int, default=0, help="learned positions to count (needs --vocab)")
    p.add_argument("--width-multiple", type=positive_int, default=64, help="snap widths to this (default 64)")
    p.add_argument("--family", choices=PLAN_FAMILIES, default="gpt",
                   help="count shapes exactly as the project's GPT (gpt, default) or a Llama block (llama), or "
                        "as Kaplan's 12 L d^2 (kaplan)")
    p.add_argument("--known", action="store_true",
                   help="also list published models against the fit (with -o: and draw frontier.png)")
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_plan, light=True)

    p = sub.add_parser("rank", parents=[common], help="exact separation ranks of small simplified networks",
                       description="Exact GF(p) rank of the grid matrix (N=2 positions, split {1},{2}) of the "
                                   "paper's softmax-free network, against C((3^L-1)/2 + d_x, d_x), for every "
                                   "depth x width x heads.",
                       epilog="Example: attnlab depth rank --depths 1 2 3 --widths 2 3 --heads 1")
    p.add_argument("--depths", type=positive_int, nargs="+", required=True, help="depths L")
    p.add_argument("--widths", type=positive_int, nargs="+", required=True, help="widths d_x")
    p.add_argument("--heads", type=positive_int, nargs="+", default=[1],
                   help="head counts H (each must divide every width; default 1)")
    p.add_argument("--templates", type=positive_int, default=None,
                   help="templates M per position (default: closed form + 8)")
    p.add_argument("--residual", action="store_true", help="add residual connections")
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_rank, light=True)

    p = sub.add_parser("sweep", parents=[common], help="train a (budget x depth x seed) grid; resumable",
                       description="Train every model of the YAML config's grid not yet in DIR/results.jsonl "
                                   "(one line per model), then analyse and plot. DIR is a run folder: the same "
                                   "recipe resumes (a grown grid trains only the new models), another is "
                                   "refused unless --overwrite. Several processes (or machines) may share DIR: "
                                   "each model is trained once.",
                       epilog="Example: attnlab depth sweep configs/depth/cpu.yaml -o runs/depth_sweep --workers 2")
    p.add_argument("config", help="sweep config (YAML)")
    add_out(p, required=True, what="sweep folder")
    add_grid(p, what="model", config=True)  # --workers (default: the config's), --backend, --ray-address
    p.add_argument("--limit", type=positive_int, default=None, help="train at most this many new models")
    add_device(p, dtype=True)  # the device is where it runs; the dtype is part of the recipe (config `dtype`)
    p.set_defaults(func=_cmd_sweep, dtype=None)

    p = sub.add_parser("analyze", aliases=["plot"], parents=[common], help="analyse and plot a sweep folder",
                       description="Best depth per budget with bootstrap over seeds, the ln d* fit, and the slope "
                                   "test: L* per budget (minimum of a parabola in ln L; 95% bootstrap over seeds) "
                                   "and the slope of L* in ln N against Levine et al.'s prediction and zero slope. "
                                   "Writes summary.json, sweep.png and record.json, in the sweep folder or in -o "
                                   "DIR. Works on a sweep still running (complete seeds only for L*).",
                       epilog="Example: attnlab depth analyze runs/depth-slope-cpu -o runs/depth-slope-analysis   "
                              "(alias: attnlab depth plot)")
    p.add_argument("dir", help="sweep folder (with results.jsonl)")
    add_out(p, what="folder for the analysis (default: the sweep folder itself)")
    p.set_defaults(func=_cmd_plot, light=True)


def _command(*argv: Any) -> str:
    """A reproducing command line; ``None`` and ``False`` parts are left out."""
    return shlex.join(["attnlab", "depth", *(str(a) for a in argv if a is not None and a is not False)])


def _out_flag(args: argparse.Namespace) -> list[str]:
    return ["-o", args.out] if args.out else []


def plan_command(budgets: Sequence[float], vocab: int | None = None, seq_len: int = 0, width_multiple: int = 64,
                 known: bool = False, out: list[str] | None = None, family: str = "gpt") -> str:
    """The ``attnlab depth plan`` line that prints the planner table for these settings."""
    from .planner import budget_text

    return _command("plan", "--params", *(budget_text(b) for b in budgets), *(["--vocab", vocab] if vocab else []),
                    *(["--seq-len", seq_len] if seq_len else []),
                    *(["--width-multiple", width_multiple] if width_multiple != 64 else []),
                    *(["--family", family] if family != "gpt" else []), known and "--known", *(out or []))


def rank_command(depths: Sequence[int], widths: Sequence[int], heads: Sequence[int] = (1,),
                 templates: int | None = None, residual: bool = False, seed: int = 0,
                 out: list[str] | None = None) -> str:
    """The ``attnlab depth rank`` line that prints the rank table for these settings."""
    return _command("rank", "--depths", *depths, "--widths", *widths, "--heads", *heads,
                    *(["--templates", templates] if templates else []), residual and "--residual",
                    *(["--seed", seed] if seed else []), *(out or []))


def _cmd_plan(args: argparse.Namespace) -> int:
    from .planner import (
        KNOWN_COLUMNS,
        KNOWN_TITLE,
        PLAN_COLUMNS,
        budget_text,
        known_models,
        known_rows,
        plan,
        plan_rows,
    )

    plans = [plan(b, args.vocab, args.seq_len, args.width_multiple, args.family) for b in args.params]  # bad: now
    command = plan_command(args.params, args.vocab, args.seq_len, args.width_multiple, args.known, _out_flag(args),
                           args.family)
    out: dict[str, Any] = {"plans": [p.to_dict() for p in plans]}
    lines = [f"counted as {plans[0].convention}", "", format_table(PLAN_COLUMNS, plan_rows(plans))]
    for p in plans:
        lines += ["", f"notes at {budget_text(p.budget)}:"] + [f"  {r.rule}: {r.note}" for r in p.rows]
        lines += [f"  warning: {w}" for w in p.warnings]
    models = known_models() if args.known else []
    if args.known:
        out["known_models"] = models
        lines += ["", format_table(KNOWN_COLUMNS, known_rows(models))]
    with out_folder(args, "depth plan") as folder:
        if folder is not None:
            from ..core.records import RunRecord

            rec = RunRecord(name="depth-plan", title="depth: depth and width per rule for a parameter budget",
                            command=command, seed=args.seed,
                            config={"params": args.params, "vocab": args.vocab, "seq_len": args.seq_len,
                                    "width_multiple": args.width_multiple, "family": args.family,
                                    "known": args.known})
            rec.add_table(f"Planner: depth and width per rule, counted as {plans[0].convention}", PLAN_COLUMNS,
                          plan_rows(plans))
            for p in plans:
                fit = next(r for r in p.rows if r.rule == "levine_fit")
                rec.metrics[f"levine_fit_{budget_text(p.budget)}"] = f"{fit.depth} x {fit.width}"
            if args.known:
                from .plots import FRONTIER_CAPTION, frontier_figure

                rec.add_table(KNOWN_TITLE, KNOWN_COLUMNS, known_rows(models))
                rec.add_figure(frontier_figure(models, folder / "frontier.png").resolve(), FRONTIER_CAPTION)
            rec.save(folder / "record.json")
    emit(args, out, text="\n".join(lines))
    return 0


#: Flags that describe a shape (``count`` without CONFIG); given with CONFIG they are an error.
_SHAPE_FLAGS = ("family", "layers", "width", "ffn", "heads", "kv_heads", "head_dim", "vocab", "tied")


def _count_architecture(args: argparse.Namespace):
    """The :class:`~attnlab.depth.params.Architecture` that ``count``'s CONFIG or flags describe."""
    import json

    from .params import Architecture, from_config, known

    given = [f"--{k.replace('_', '-')}" for k in _SHAPE_FLAGS if getattr(args, k) is not None]
    given += [f for f, on in (("--seq-len", args.seq_len), ("--attention-bias", args.attention_bias),
                              ("--mlp-bias", args.mlp_bias)) if on]
    if args.config is not None:
        if given:
            raise AttnlabError(f"give CONFIG or shape flags, not both ({', '.join(given)} with {args.config})")
        path = Path(args.config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            arch = known(args.config)
            if arch is None:
                raise AttnlabError(f"{args.config}: neither a config.json nor a published model (names: attnlab "
                                   "depth plan --known)")
            return arch
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AttnlabError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise AttnlabError(f"{path}: expected a JSON object (an HF config.json)")
        return from_config(cfg, path.parent.name or str(path))
    missing = [f"--{k}" for k in ("family", "layers", "width", "vocab") if getattr(args, k) is None]
    if missing:
        raise AttnlabError(f"give a CONFIG, or the shape: {' '.join(missing)} missing (see --help)")
    heads = args.heads or (args.width // 64 if args.width % 64 == 0 else 1)
    decoder = args.family not in ("gpt2", "bert")
    if decoder and args.ffn is None:
        raise AttnlabError(f"--family {args.family}: give --ffn (the gated MLP's hidden size)")
    tied = args.tied if args.tied is not None else args.family in ("gpt2", "gemma", "gemma2", "gemma3_text")
    if not decoder and (args.kv_heads or args.head_dim or args.attention_bias or args.mlp_bias):
        raise AttnlabError(f"--family {args.family} has no --kv-heads/--head-dim/--attention-bias/--mlp-bias")
    if args.family == "bert" and args.tied is not None:
        raise AttnlabError("--family bert is counted without an LM head (drop --tied/--no-tied)")
    return Architecture(f"{args.family} L{args.layers} d{args.width}", args.family, args.layers, args.width,
                        args.vocab, args.seq_len, heads, args.kv_heads, args.ffn, tied, "flags", args.head_dim,
                        args.attention_bias, args.mlp_bias)


def count_command(args: argparse.Namespace) -> str:
    """The ``attnlab depth count`` line for ``args``."""
    flags = [[f"--{k.replace('_', '-')}", getattr(args, k)] for k in _SHAPE_FLAGS[:-1] + ("seq_len", "context")
             if getattr(args, k)]
    return _command("count", args.config, *[x for f in flags for x in f],
                    *(["--tied" if args.tied else "--no-tied"] if args.tied is not None else []),
                    args.attention_bias and "--attention-bias", args.mlp_bias and "--mlp-bias", *_out_flag(args))


def _cmd_count(args: argparse.Namespace) -> int:
    from .params import count, flops, parts
    from .planner import LAWS_COLUMNS, assess, laws_rows

    arch = _count_architecture(args)
    c, by_part = count(arch), parts(arch)
    cost = flops(arch, args.context) if (args.context or arch.seq_len) else None
    place = assess(arch.depth, arch.width, c["non_embedding"])
    paper = assess(arch.depth, arch.width)
    rows = [[k, v] for k, v in by_part.items() if v] + [[k, c[k]] for k in ("non_embedding", "embedding", "total")]
    rows.append(["12 L d^2 (Kaplan eq. 2.1)", c["kaplan"]])
    lines = [f"{arch.name} ({arch.family}, {arch.source or 'flags'}): L = {arch.depth}, d = {arch.width}", "",
             format_table(["part", "parameters"], rows), ""]
    if cost:
        lines += [f"FLOPs per token (Kaplan et al. 2020 Table 1; n_ctx = {cost['context']}): forward 2N + 2 L n_ctx "
                  f"d_attn = {cost['forward']:.4g}, training 3x = {cost['training']:.4g}, de-embedding 2 d V = "
                  f"{cost['de_embedding']:.4g} (not in C_forward); 6N = {cost['kaplan_6N']:.4g}", ""]
    else:
        lines += ["FLOPs per token: give --context (this architecture has no learned positions)", ""]
    lines += ["among the depth laws (at N = its exact non-embedding count, and at 12 L d^2):", "",
              format_table(LAWS_COLUMNS, laws_rows(place, paper))]
    command = count_command(args)
    with out_folder(args, "depth count") as folder:
        if folder is not None:
            from ..core.records import RunRecord

            rec = RunRecord(name="depth-count", title=f"depth: exact count of {arch.name}", command=command,
                            seed=args.seed, config={"architecture": arch.__dict__, "context": args.context})
            rec.add_table("Parameters by part", ["part", "parameters"], rows)
            rec.add_table("Among the depth laws", LAWS_COLUMNS, laws_rows(place, paper))
            rec.metrics.update({k: c[k] for k in ("non_embedding", "total", "kaplan")})
            if cost:
                rec.metrics.update({"forward_flops_per_token": cost["forward"], "context": cost["context"]})
            rec.save(folder / "record.json")
    emit(args, {"architecture": arch.__dict__, "parts": by_part, **c, "flops": cost, "laws": place,
                "laws_12Ld2": paper}, text="\n".join(lines))
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    from .separation import MAX_TEMPLATES, RANK_COLUMNS, RANK_TITLE, exact_rank, rank_rows
    from .theory import regime, separation_rank

    for d in args.widths:  # refuse bad input before any work
        for h in args.heads:
            if d % h:
                raise AttnlabError(f"width {d} is not divisible by {h} heads (choose widths that are multiples)")
    for L in args.depths:
        for d in args.widths:
            need = args.templates or separation_rank(L, d) + 8
            if need > MAX_TEMPLATES:
                raise AttnlabError(f"L={L}, d_x={d} needs {need} templates (limit {MAX_TEMPLATES}): "
                                   "drop that depth/width or pass --templates")
    command = rank_command(args.depths, args.widths, args.heads, args.templates, args.residual, args.seed,
                           _out_flag(args))
    with out_folder(args, "depth rank") as folder:
        results = [exact_rank(L, d, h, args.templates, args.residual, args.seed)
                   for L in args.depths for d in args.widths for h in args.heads]
        rows = rank_rows(results)
        if folder is not None:
            from ..core.records import RunRecord

            rec = RunRecord(name="depth-rank", title="depth: exact separation ranks (GF(p))", command=command,
                            seed=args.seed, config={k: getattr(args, k) for k in
                                                    ("depths", "widths", "heads", "templates", "residual")})
            rec.add_table(RANK_TITLE, RANK_COLUMNS, rows)
            rec.metrics["matching_closed_form"] = f"{sum(r.rank == r.closed_form for r in results)}/{len(results)}"
            rec.save(folder / "record.json")
    data = [{**r.to_dict(), "regime": regime(r.depth, r.width)} for r in results]
    emit(args, {"results": data}, text=format_table(RANK_COLUMNS, rows))
    return 0


def _sweep_text(rec) -> str:
    lines = []
    for table in rec.tables:
        lines += [format_table(table.columns, table.rows), ""]
    lines += [f"{k}: {v}" for k, v in rec.metrics.items()]
    return "\n".join(lines)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..core.runtime import choose_device
    from .sweep import load_config, run_sweep, summarize

    device = choose_device(args.device)  # before the folder is touched
    options = grid_options(args)
    config = load_config(args.config)
    if args.dtype is not None:  # --dtype overrides the config's dtype (default float32)
        config = replace(config, dtype=args.dtype)
    run_sweep(config, args.out, limit=args.limit, overwrite=args.overwrite, device=device, **options)
    command = _command("sweep", args.config, "-o", args.out, *(["--dtype", args.dtype] if args.dtype else []))
    rec = summarize(args.out, command, args.seed)
    emit(args, {"dir": str(Path(args.out)), **rec.metrics}, text=_sweep_text(rec))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .sweep import summarize

    source = Path(args.dir)
    if not source.is_dir():
        raise AttnlabError(f"not a folder: {args.dir} (give a sweep folder)")
    command = _command(args.depth_command, args.dir, *_out_flag(args))
    with out_folder(args, "depth plot") as folder:
        rec = summarize(source, command, args.seed, dest=folder)
    import json

    dest = Path(args.out) if args.out else source
    slope = json.loads((dest / "summary.json").read_text(encoding="utf-8"))["slope"]
    emit(args, {"dir": str(dest), "figure": str(dest / "sweep.png"), **rec.metrics, "slope_analysis": slope},
         text=_sweep_text(rec))
    return 0
