"""The ``attnlab`` command: one group per built module, plus ``tour``, ``report`` and ``info``.

Exit codes: 0 ok, 2 bad input (one line on stderr; ``--debug`` shows the traceback), 1 internal error.
A module mounts itself by providing ``attnlab/<module>/cli.py`` with ``register(subparsers, common)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from . import __version__, available_modules
from .core.clikit import Parser, add_out, common_parser, emit
from .core.errors import AttnlabError


def build_parser() -> Parser:
    common = common_parser()
    parser = Parser(prog="attnlab", description="attnlab: results about self-attention as working, tested, "
                    "measured tools. One command group per module, plus tour, report and info.",
                    epilog="Example: attnlab tour   (each module's headline experiment, writes report/index.html)")
    parser.add_argument("--version", action="version", version=f"attnlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tour", parents=[common], help="run every module's headline experiment and write the report",
                       description="Run each installed module's tour() in sequence and write a report.",
                       epilog="Example: attnlab tour --only machines -o report")
    p.add_argument("--only", nargs="+", metavar="MODULE", help="run only these modules (core, "
                   + ", ".join(available_modules()) + ")")
    p.add_argument("--full", action="store_true",
                   help="the full experiments (about 11 min on 2 cores) instead of the quick profile (about 3.5 min)")
    add_out(p, default="report", what="report directory")
    p.set_defaults(func=_cmd_tour)

    p = sub.add_parser("report", parents=[common], help="render run records (JSON) into one HTML report",
                       description="Collect every attnlab run record under the given paths into one HTML page.",
                       epilog="Example: attnlab report runs/ -o report/index.html")
    p.add_argument("paths", nargs="+", help="record files or directories searched recursively")
    add_out(p, default="report/index.html", what="HTML file")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("info", parents=[common], help="versions, threads, device, cache, packaged models",
                       epilog="Example: attnlab info --json")
    p.set_defaults(func=_cmd_info)

    for module in available_modules():
        try:
            importlib.import_module(f"attnlab.{module}.cli").register(sub, common)
        except Exception as e:  # one broken module must not take the other commands down with it
            p = sub.add_parser(module, parents=[common], help=f"(unavailable: {type(e).__name__})", add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_unavailable(module, e))
    parser.commands = sub.choices  # name -> parser, for the help of a bare group
    return parser


def _unavailable(module: str, error: Exception):
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError(f"attnlab.{module} failed to load ({type(error).__name__}: {error})")

    return run


def _cmd_tour(args: argparse.Namespace) -> int:
    from .tour import run_tour

    result = run_tour(args.out, seed=args.seed, only=args.only, full=args.full, overwrite=args.overwrite,
                      quiet=args.quiet)
    emit(args, result, text=result["summary"] + f"\nreport written to {result['report']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .core.outputs import output_file
    from .core.records import UNREADABLE, find_records
    from .core.report import page_path, summary_path, write_report

    records = [r for path in args.paths for r in find_records(path)]
    if not records:
        raise AttnlabError(f"no attnlab run records found under {', '.join(args.paths)}")
    html_path = page_path(args.out)
    output_file(html_path, args.overwrite)
    output_file(summary_path(html_path), args.overwrite)
    for _, rec in records:
        if rec.status == "failed" and rec.title.startswith(UNREADABLE):
            print(f"attnlab: warning: {rec.error}", file=sys.stderr)
    out = write_report(records, html_path)
    emit(args, {"report": str(out), "records": len(records)}, text=f"report written to {out} ({len(records)} records)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .core import models
    from .core.runtime import choose_device, environment

    env = environment()
    info = {"attnlab": __version__, "python": env["python"], "platform": env["platform"],
            "versions": env["versions"], "cpu_count": env["cpu_count"], "torch_threads": env["torch_threads"],
            "device": choose_device("auto"), "cuda": env["cuda"], "cache_dir": str(models.cache_dir()),
            "modules": available_modules(), "packaged_models": models.installed()}
    lines = [f"attnlab {__version__} (python {info['python']}, {info['platform']})",
             "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
             f"threads: {info['torch_threads']} of {info['cpu_count']} cores; device: {info['device']}",
             f"cache: {info['cache_dir']}", "modules: " + (", ".join(info["modules"]) or "none yet"),
             "packaged models:"]
    lines += [f"  {name}: {path or 'not installed (' + models.PACKAGED[name].install_hint + ')'}"
              for name, path in info["packaged_models"].items()]
    emit(args, info, text="\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):  # no command, or a bare group: show the help of what was typed
            parser.commands.get(getattr(args, "command", None), parser).print_help(sys.stderr)
            return 2
        from .core.runtime import configure

        # Commands marked light (help, listings, planners, the table executor) never import torch.
        configure(args.seed, args.threads, torch=not getattr(args, "light", False))
        return int(args.func(args) or 0)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    except AttnlabError as e:
        if debug:
            traceback.print_exc()
        print(f"attnlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # stdout closed early (`attnlab ... | head`): not an error, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    except OSError as e:  # the user's environment (a path, permissions, a full disk), not an attnlab bug
        if debug:
            traceback.print_exc()
        from .core.outputs import os_error

        print(f"attnlab: error: {os_error(e, e.filename or '?', 'use')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an attnlab bug, not the user's: say so in one line
        if debug:
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"attnlab: internal error: {type(e).__name__}: {first} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
