"""``attnlab depth``: plan a shape for a budget, measure separation ranks, run and plot depth sweeps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from ..core.clikit import add_out, emit, nonneg_int, positive_float, positive_int
from ..core.errors import AttnlabError


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with aligned columns."""
    cells = [[str(c) for c in columns]] + [["-" if v is None else f"{v:,}" if isinstance(v, int) and not
                                            isinstance(v, bool) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def register(subparsers, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("depth", help="depth/width trade-off of self-attention (Levine et al. 2020)",
                                  description="Depth-efficiency theory, a depth/width planner, exact separation "
                                              "ranks and fixed-budget depth sweeps.")
    sub = group.add_subparsers(dest="depth_command", metavar="COMMAND")

    p = sub.add_parser("plan", parents=[common], help="depth and width for a parameter budget, rule by rule",
                       description="Recommend (depth, width) for a budget under Levine et al.'s fit and the other "
                                   "published rules. Without --vocab the budget is 12 L d^2 non-embedding "
                                   "parameters; with --vocab it is the total with a tied embedding.",
                       epilog="Example: attnlab depth plan --params 1.3e9 --vocab 50257 --seq-len 2048")
    p.add_argument("--params", type=positive_float, required=True, help="parameter budget, e.g. 1.3e9")
    p.add_argument("--vocab", type=positive_int, default=None, help="vocabulary size: count a tied embedding")
    p.add_argument("--seq-len", type=nonneg_int, default=0, help="learned positions to count (needs --vocab)")
    p.add_argument("--width-multiple", type=positive_int, default=64, help="snap widths to this (default 64)")
    p.add_argument("--known", action="store_true", help="also list published models against the fit")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("rank", parents=[common], help="exact separation ranks of small simplified networks",
                       description="Exact GF(p) rank of the grid matrix (N=2 positions, split {1},{2}) of the "
                                   "paper's softmax-free network, against C((3^L-1)/2 + d_x, d_x).",
                       epilog="Example: attnlab depth rank --depths 1 2 3 --widths 2 3 --heads 1")
    p.add_argument("--depths", type=positive_int, nargs="+", required=True, help="depths L")
    p.add_argument("--widths", type=positive_int, nargs="+", required=True, help="widths d_x")
    p.add_argument("--heads", type=positive_int, default=1, help="heads H (must divide every width)")
    p.add_argument("--templates", type=positive_int, default=None,
                   help="templates M per position (default: closed form + 8)")
    p.add_argument("--residual", action="store_true", help="add residual connections")
    p.set_defaults(func=_cmd_rank)

    p = sub.add_parser("sweep", parents=[common], help="train a (budget x depth x seed) grid; resumable",
                       description="Train every model of the YAML config's grid not yet in DIR/results.jsonl "
                                   "(one line per model), then analyse and plot.",
                       epilog="Example: attnlab depth sweep configs/depth/cpu.yaml -o docs/results/depth_sweep")
    p.add_argument("config", help="sweep config (YAML)")
    add_out(p, required=True, what="results directory")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes, 1 thread each")
    p.add_argument("--limit", type=positive_int, default=None, help="train at most this many new models")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("plot", parents=[common], help="analyse and plot a sweep directory",
                       description="Best depth per budget with bootstrap over seeds, the ln d* fit, sweep.png.",
                       epilog="Example: attnlab depth plot docs/results/depth_sweep")
    p.add_argument("dir", help="sweep results directory")
    p.set_defaults(func=_cmd_plot)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .planner import known_models, plan

    result = plan(args.params, args.vocab, args.seq_len, args.width_multiple)
    out = result.to_dict()
    lines = [f"budget {args.params:.4g} parameters, counted as {result.convention}", ""]
    lines.append(format_table(["rule", "depth", "width", "count", "note"],
                              [[r.rule, r.depth, r.width, r.count, r.note] for r in result.rows]))
    lines += [f"warning: {w}" for w in result.warnings]
    if args.known:
        out["known_models"] = known_models()
        lines += ["", format_table(["model", "L", "d", "12Ld^2", "total", "fit L*", "fit d*", "verdict"],
                                   [[m["name"], m["depth"], m["width"], m["kaplan"], m["total"],
                                     round(m["fit_depth"], 1), round(m["fit_width"]), m["verdict"]]
                                    for m in out["known_models"]])]
    emit(args, out, text="\n".join(lines))
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    from .separation import MAX_TEMPLATES, exact_rank
    from .theory import regime, separation_rank

    for d in args.widths:  # refuse bad input before any work
        if d % args.heads:
            raise AttnlabError(f"width {d} is not divisible by {args.heads} heads (choose widths that are multiples)")
    for L in args.depths:
        for d in args.widths:
            need = args.templates or separation_rank(L, d) + 8
            if need > MAX_TEMPLATES:
                raise AttnlabError(f"L={L}, d_x={d} needs {need} templates (limit {MAX_TEMPLATES}): "
                                   "drop that depth/width or pass --templates")
    rows = [exact_rank(L, d, args.heads, args.templates, args.residual, args.seed).to_dict()
            for L in args.depths for d in args.widths]
    for r in rows:
        r["regime"] = regime(r["depth"], r["width"])
    text = format_table(["L", "d_x", "H", "M", "exact rank", "C((3^L-1)/2+d_x,d_x)", "match", "regime", "s"],
                        [[r["depth"], r["width"], r["heads"], r["templates"], r["rank"], r["closed_form"],
                          r["matches_closed_form"], r["regime"], r["seconds"]] for r in rows])
    emit(args, {"results": rows}, text=text)
    return 0


def _sweep_text(rec) -> str:
    table = rec.tables[0]
    lines = [format_table(table.columns, table.rows), ""]
    lines += [f"{k}: {v}" for k, v in rec.metrics.items()]
    return "\n".join(lines)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_config, run_sweep, summarize

    config = load_config(args.config)
    run_sweep(config, args.out, workers=args.workers, progress=not args.json, limit=args.limit)
    rec = summarize(args.out, f"attnlab depth sweep {args.config} -o {args.out}", args.seed)
    emit(args, {"dir": str(Path(args.out)), **rec.metrics}, text=_sweep_text(rec))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .sweep import summarize

    if not Path(args.dir).is_dir():
        raise AttnlabError(f"not a directory: {args.dir} (give a sweep results directory)")
    rec = summarize(args.dir, f"attnlab depth plot {args.dir}", args.seed)
    emit(args, {"dir": args.dir, "figure": str(Path(args.dir) / "sweep.png"), **rec.metrics}, text=_sweep_text(rec))
    return 0
