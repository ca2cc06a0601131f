"""``attnlab machines``: run, compile, certify and list Turing/Post machines as constant-bit transformers.

Every command is light (no torch, no transformers): the executors and the certificate are numpy and pure
Python; only :mod:`attnlab.machines.module` (the ``nn.Module``) needs torch.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any

from ..core.clikit import add_out, emit, out_folder, positive_int
from .registry import EXECUTORS

if TYPE_CHECKING:
    from ..core.records import RunRecord
    from .compile import CompiledTransformer
    from .machine import PostMachine, TuringMachine

SPEC_HELP = "a library name (see `attnlab machines list`), a bbchallenge string or a YAML file"


def register(subparsers, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("machines", help="compile Turing machines into constant-bit-size transformers",
                                  description="Turing machine -> Post machine -> one-layer hardmax transformer "
                                              "(Li & Wang 2025), run exactly and checked against a reference.",
                                  epilog="Example: attnlab machines run bb4 --executor kv --json")
    sub = group.add_subparsers(dest="machines_command", metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run a machine through its compiled transformer",
                       description="Run SPEC on --input with an executor; the decoded configuration is checked "
                                   "against the reference TM every --check-every steps and at the end. Exit codes: "
                                   "0 halted, 3 not halted within --max-steps, 2 bad input (also a window too "
                                   "small), 1 a mismatch against the reference.",
                       epilog="Example: attnlab machines run bb4 --executor kv -o runs/bb4-kv")
    _spec_args(p)
    p.add_argument("--executor", choices=tuple(EXECUTORS), default="table",
                   help="; ".join(f"{name}: {spec.help}" for name, spec in EXECUTORS.items()))
    p.add_argument("--max-steps", type=positive_int, default=10**7,
                   help="TM steps (Post machine: tokens) before giving up (default 10^7)")
    p.add_argument("--check-every", type=positive_int, default=1,
                   help="check the decoded configuration every K completed TM steps (default 1)")
    add_out(p, what="run folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_run, light=True)

    p = sub.add_parser("compile", parents=[common], help="compile to safetensors + config.json",
                       description="Compile SPEC for a window and write model.safetensors (int8 weights), "
                                   "config.json (blocks, token names, sizes, certificate) and record.json to DIR.",
                       epilog="Example: attnlab machines compile pal --input abba -o out/pal")
    _spec_args(p)
    add_out(p, required=True, what="output folder")
    p.set_defaults(func=_cmd_compile, light=True)

    p = sub.add_parser("certify", parents=[common], help="exhaustive certificate of the compiled network",
                       description="Evaluate the network on every (current token, front symbol) pair and compare "
                                   "with the Post machine's transition function; check that the RPE's hardmax "
                                   "picks the oldest token for the window. Exit code 1 if not exact.",
                       epilog="Example: attnlab machines certify bb4 --window 100000")
    _spec_args(p)
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_certify, light=True)

    p = sub.add_parser("list", parents=[common], help="the built-in machines",
                       epilog="Example: attnlab machines list --json")
    p.set_defaults(func=_cmd_list, light=True)


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--input", default=None, help="input string, one character per cell (default: the library "
                                                 "machine's example, else empty)")
    p.add_argument("--window", type=positive_int, default=None,
                   help="window W (queue length; the cyclic tape has W+1 cells). Default: from a reference run")


def _load(args: argparse.Namespace) -> tuple[TuringMachine | PostMachine, str]:
    from .library import LIBRARY, load_machine

    machine = load_machine(args.spec)
    text = args.input if args.input is not None else (LIBRARY[args.spec].input if args.spec in LIBRARY else "")
    return machine, text


def _window(machine: TuringMachine | PostMachine, text: str, window: int | None, max_steps: int = 10**7) -> int:
    from .machine import PostMachine
    from .simulate import minimal_window

    if window is not None:
        return window
    if isinstance(machine, PostMachine):
        return max(len(text), 1)
    return max(minimal_window(machine, machine.encode(text), max_steps), len(text) - 1, 1)


def _compiled(args: argparse.Namespace) -> tuple[TuringMachine | PostMachine, str, CompiledTransformer]:
    from .compile import compile_machine

    machine, text = _load(args)
    return machine, text, compile_machine(machine, _window(machine, text, args.window))


def _command(args: argparse.Namespace, text: str, window: int, *extra: str) -> str:
    """The command line that reproduces this result exactly (input and window spelled out)."""
    argv = ["attnlab", "machines", args.machines_command, args.spec, "--input", text, "--window", str(window), *extra]
    return shlex.join(argv)


def _record(args: argparse.Namespace, name: str, title: str, command: str, result: dict[str, Any],
            config: dict[str, Any], error: str | None = None) -> RunRecord:
    from ..core.records import RunRecord

    rec = RunRecord(name=name, title=title, command=command, seed=args.seed, config=config, metrics=result,
                    status="failed" if error else "ok", error=error)
    rec.add_table(title, ["quantity", "value"], [[k, v] for k, v in result.items()], command=command)
    return rec


def _cmd_run(args: argparse.Namespace) -> int:
    from .simulate import run_machine

    with out_folder(args, "machines run") as out:
        machine, text = _load(args)
        result = run_machine(machine, text, window=args.window, executor=args.executor, max_steps=args.max_steps,
                             check_every=args.check_every).to_dict()
        if out is not None:
            command = _command(args, text, result["window"], "--executor", args.executor, "--max-steps",
                               str(args.max_steps), "--check-every", str(args.check_every))
            config = {"spec": args.spec, "input": text, "window": result["window"], "executor": args.executor,
                      "max_steps": args.max_steps, "check_every": args.check_every}
            _record(args, f"machines-run-{machine.name}", f"machines: {machine.name} on {text!r} ({args.executor})",
                    command, result, config, result["error"]).save(out / "record.json")
    lines = [f"{result['machine']} on {text!r} ({args.executor} executor, window {result['window']})",
             f"  halted {result['halted']} in state {result['final_state']} after {result['tm_steps']:,} TM steps, "
             f"{result['tokens']:,} tokens" + (f" ({result['tokens_per_s']:,.0f} tokens/s)" if result["tokens_per_s"]
                                               else f" ({result['tm_steps_per_s'] or 0:,.0f} TM steps/s)"),
             f"  tape {result['tape']!r} ({result['nonblank']} non-blank)",
             f"  model: vocab {result['vocab_size']}, d_model {result['d_model']}, d_ffn {result['d_ffn']}, "
             f"{result['params']:,} params x {result['bits_per_param']} bits = {result['model_bits']:,} bits",
             f"  checks {result['checks']}, mismatches {result['mismatches']}"]
    emit(args, result, "\n".join(lines))
    if result["error"]:
        print(f"attnlab: error: {result['error']}", file=sys.stderr)
        return 2 if result["error"].startswith("window too small") else 1
    return 0 if result["halted"] else 3


def _cmd_compile(args: argparse.Namespace) -> int:
    from .executors import certify

    with out_folder(args, "compiled machine") as out:
        machine, text, model = _compiled(args)
        cert = certify(model)
        model.save(out, extra={"machine": machine.name, "certificate": cert.summary()})
        result = {"out": str(args.out), **model.sizes(), "certified": cert.exact}
        command = _command(args, text, model.window, "-o", str(args.out))
        config = {"spec": args.spec, "input": text, "window": model.window}
        _record(args, f"machines-compile-{machine.name}", f"machines: {machine.name} compiled for W={model.window}",
                command, result, config).save(out / "record.json")
    emit(args, result, f"wrote {args.out}/model.safetensors and config.json: window {model.window}, vocab "
                       f"{model.vocab_size}, d_model {model.d_model}, d_ffn {model.d_ffn}, {model.params:,} params "
                       f"({model.model_bits:,} bits); certificate exact: {cert.exact}")
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from .executors import certify
    from .precision import oldest_is_selected

    with out_folder(args, "machines certificate") as out:
        machine, text, model = _compiled(args)
        cert = certify(model)
        lemma_b = oldest_is_selected(model)
        result = {"machine": machine.name, **model.sizes(), **cert.summary(), "rpe_selects_oldest": lemma_b,
                  "certified": cert.exact and lemma_b}
        if out is not None:
            command = _command(args, text, model.window)
            config = {"spec": args.spec, "input": text, "window": model.window}
            _record(args, f"machines-certify-{machine.name}", f"machines: certificate of {machine.name} at "
                    f"W={model.window}", command, result, config,
                    None if result["certified"] else "not certified").save(out / "record.json")
    emit(args, result, f"{machine.name}: {cert.pairs} (token, front) pairs, mismatches {cert.mismatches}, "
                       f"min logit margin {cert.min_margin:g}, halting tokens terminal {cert.terminal_ok}; "
                       f"hardmax picks the oldest of W={model.window}: {lemma_b} -> "
                       f"{'CERTIFIED' if result['certified'] else 'NOT CERTIFIED'}")
    return 0 if result["certified"] else 1


def _cmd_list(args: argparse.Namespace) -> int:
    from .library import LIBRARY, load_machine
    from .machine import PostMachine

    rows = []
    for name, entry in LIBRARY.items():
        m = load_machine(name)
        kind = "post" if isinstance(m, PostMachine) else "turing"
        rows.append({"name": name, "kind": kind, "states": len(m.states), "symbols": len(m.symbols),
                     "input": entry.input, "description": entry.description})
    width = max(len(r["name"]) for r in rows)
    text = "\n".join(f"{r['name']:<{width}}  {r['kind']:<6}  {r['states']:>2} states  {r['symbols']} symbols  "
                     f"{r['description']}" + (f"  (example input {r['input']!r})" if r["input"] else "") for r in rows)
    emit(args, {"machines": rows}, text)
    return 0
