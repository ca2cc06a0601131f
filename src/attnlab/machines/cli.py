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
from .registry import EXECUTORS, FORMATS, RUNTIMES
from .softmax import UNIT_ROUNDOFF

if TYPE_CHECKING:
    from ..core.records import RunRecord
    from .machine import PostMachine, TuringMachine

SPEC_HELP = "a library name (see `attnlab machines list`), a bbchallenge string or a YAML file"

#: Exit codes of `attnlab machines` (docs/machines.md): bad input is 2 and an internal error 1, as everywhere.
HALTED, NOT_HALTED, MISMATCH = 0, 3, 4
EXIT_CODES = ("exit codes: 0 ok (run: halted), 1 internal error, 2 bad input (also a window too small), "
              "3 not halted within --max-steps, 4 a mismatch against the reference")


def register(subparsers, common: argparse.ArgumentParser) -> None:
    group = subparsers.add_parser("machines", help="compile Turing machines into constant-bit-size transformers",
                                  description="Turing machine -> Post machine -> one-layer hardmax transformer "
                                              "(Li & Wang 2025), run exactly and checked against a reference.",
                                  epilog="Example: attnlab machines run bb4 --executor kv --json")
    sub = group.add_subparsers(dest="machines_command", metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run a machine through its compiled transformer",
                       description="Run SPEC on --input with an executor; the decoded configuration is checked "
                                   "against the reference TM every --check-every steps and at the end. "
                                   f"{EXIT_CODES}.",
                       epilog="Example: attnlab machines run bb4 --executor kv --trace bb4.jsonl -o runs/bb4-kv")
    _spec_args(p)
    p.add_argument("--executor", choices=tuple(EXECUTORS), default="table",
                   help="; ".join(f"{name}: {spec.help}" for name, spec in EXECUTORS.items()))
    p.add_argument("--check-every", type=positive_int, default=1,
                   help="check the decoded configuration every K completed TM steps (default 1)")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write the generated token ids as JSON Lines (header, one id per line, footer), the stream "
                        "`attnlab machines replay --trace` compares with")
    p.add_argument("--figure", default=None, metavar="FILE.png",
                   help="draw the attention/queue figure: per generated token the key the hardmax picked (from the "
                        "compiled weights) and the queue over time, for the first tokens of the run")
    add_out(p, what="run folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_run, light=True)

    p = sub.add_parser("space", parents=[common], help="the space characterisation: exact iff W >= s(n) - 1",
                       description="WINDOW[s(n)] = SPACE[s(n)], measured: for each SPEC and input, s(n) = the cells "
                                   "the reference run visits; the compiled transformer runs at W = s(n) - 1 + k for "
                                   "k = -BELOW .. ABOVE without the window check, and every decoded configuration "
                                   "is compared with the reference TM (first mismatching step, first step the "
                                   "network reads a different (state, symbol), the step the run outgrows W + 1 "
                                   "cells). Without SPEC: the experiment of docs/machines.md. With -o: space.json, "
                                   f"space.md and record.json. {EXIT_CODES} (4: a window >= s(n) - 1 not exact).",
                       epilog="Example: attnlab machines space bb4 copy --inputs '' 111 --below 3 -o out/space")
    p.add_argument("specs", nargs="*", metavar="SPEC", help=SPEC_HELP + " (default: the docs' experiment)")
    p.add_argument("--inputs", nargs="+", default=None, metavar="X",
                   help="inputs, each run on every SPEC (default: each machine's example input)")
    p.add_argument("--below", type=int, default=3, metavar="K", help="windows s(n)-1-K .. s(n)-2 (default 3)")
    p.add_argument("--above", type=int, default=1, metavar="K", help="windows s(n) .. s(n)-1+K (default 1)")
    p.add_argument("--executor", choices=tuple(e for e in EXECUTORS if e != "reference"), default="table",
                   help="the network executor (default table)")
    p.add_argument("--max-steps", type=positive_int, default=10**6,
                   help="TM steps of the reference run that measures s(n) (default 10^6); the network runs at "
                        "most twice the reference's steps + 100")
    add_out(p, what="results folder")
    p.set_defaults(func=_cmd_space, light=True)

    p = sub.add_parser("compile", parents=[common], help="compile to safetensors + config.json",
                       description="Compile SPEC for a window and write the export of format safetensors "
                                   "(`attnlab machines export --format safetensors`) plus record.json to DIR. A "
                                   f"window too small for the input is refused. {EXIT_CODES}.",
                       epilog="Example: attnlab machines compile pal --input abba -o out/pal")
    _spec_args(p)
    add_out(p, required=True, what="output folder")
    p.set_defaults(func=_cmd_export, light=True, format="safetensors")

    p = sub.add_parser("export", parents=[common], help="a self-contained folder any runtime can execute",
                       description="Compile SPEC for --input and write config.json (architecture as equations, "
                                   "vocabulary records, prompt, decoding rule with a halt token, the window and "
                                   "the space bound it was sized for) and the network: safetensors (int8), onnx "
                                   "(model.onnx for onnxruntime) or hf (safetensors + modeling_machine.py, torch "
                                   f"SDPA softmax). A window too small for the input is refused. {EXIT_CODES}.",
                       epilog="Example: attnlab machines export bb4 --format onnx -o out/bb4-onnx")
    _spec_args(p)
    p.add_argument("--format", choices=FORMATS, default="safetensors",
                   help="safetensors: int8 weights; onnx: model.onnx (hardmax, float32); hf: safetensors + a "
                        "standalone torch module on scaled_dot_product_attention (default safetensors)")
    add_out(p, required=True, what="output folder")
    p.set_defaults(func=_cmd_export, light=True)

    p = sub.add_parser("replay", parents=[common], help="run an exported folder in onnxruntime or torch",
                       description="The generic greedy driver: reads only DIR (config.json and the network), "
                                   "generates from the prompt until the halt token and decodes the result with "
                                   "config.json's records. With --trace, compares with a `run --trace` stream "
                                   f"token for token. {EXIT_CODES}.",
                       epilog="Example: attnlab machines replay out/bb4-onnx --runtime onnx --trace bb4.jsonl")
    p.add_argument("folder", metavar="DIR", help="a folder written by `attnlab machines export`")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnx",
                   help="onnx: onnxruntime on model.onnx; torch: the SDPA softmax module on model.safetensors "
                        "(default onnx)")
    p.add_argument("--dtype", choices=tuple(UNIT_ROUNDOFF), default="float32",
                   help="torch compute precision; its inverse temperature comes from config.json (default float32)")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="torch device: auto, cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--trace", default=None, metavar="FILE", help="a `run --trace` file to compare with")
    p.add_argument("--max-tokens", type=positive_int, default=10**7,
                   help="stop after N tokens (default 10^7; with --trace: the trace's length)")
    p.set_defaults(func=_cmd_replay, light=True)

    p = sub.add_parser("certify", parents=[common], help="closed certificate of the compiled network",
                       description="The closed certificate: lemma B (the RPE's hardmax picks the oldest token over "
                                   "every window, at the compiled W and, by the RPE's closed form, at every W >= 1) "
                                   "and the network on every (current token, front symbol) pair against the Post "
                                   "machine's transition function; then the precision certificate: the same "
                                   "exhaustive check with every operation rounded to p bits, for p = 2, 3, ... up to "
                                   f"--max-bits, stating the smallest p that passes. {EXIT_CODES} (4: not certified).",
                       epilog="Example: attnlab machines certify bb4 --window 100000 --max-bits 4")
    _spec_args(p)
    p.add_argument("--max-bits", type=int, default=8, metavar="P",
                   help="largest p the precision certificate tries (default 8; 0 or 1: skip it)")
    add_out(p, what="record folder (DIR/record.json; default: write nothing)")
    p.set_defaults(func=_cmd_certify, light=True)

    p = sub.add_parser("list", parents=[common], help="the built-in machines",
                       epilog="Example: attnlab machines list --json")
    p.set_defaults(func=_cmd_list, light=True)


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--input", default=None, help="input string, one character per cell (default: the library "
                                                 "machine's example, the YAML file's input:, else empty)")
    p.add_argument("--window", type=positive_int, default=None,
                   help="window W (queue length; the cyclic tape has W+1 cells). Default: from a reference run")
    p.add_argument("--max-steps", type=positive_int, default=10**7,
                   help="TM steps (Post machine: tokens) of the run, and of the reference run that sizes the "
                        "window (default 10^7)")


def _load(args: argparse.Namespace) -> tuple[TuringMachine | PostMachine, str]:
    from .library import load_spec

    machine, default = load_spec(args.spec)
    return machine, args.input if args.input is not None else default


def _window(machine: TuringMachine | PostMachine, text: str, window: int | None, max_steps: int) -> int:
    from .machine import PostMachine
    from .simulate import minimal_window

    if window is not None:
        return window
    if isinstance(machine, PostMachine):
        return max(len(text), 1)
    return max(minimal_window(machine, machine.encode(text), max_steps), len(text) - 1, 1)


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
    from ..core.atomic import atomic_write_text
    from ..core.errors import AttnlabError
    from ..core.outputs import output_file
    from .replay import trace_lines
    from .simulate import run_machine

    for flag, path in (("--trace", args.trace), ("--figure", args.figure)):
        if path is not None:
            output_file(path, args.overwrite)  # checked before any work
            if args.executor == "reference":
                raise AttnlabError(f"{flag} records the tokens of a network executor; the reference interpreter "
                                   f"generates none (use --executor table, kv or dense)")
    trace: list[int] | None = None if args.trace is None and args.figure is None else []
    with out_folder(args, "machines run") as out:
        machine, text = _load(args)
        result = run_machine(machine, text, window=args.window, executor=args.executor, max_steps=args.max_steps,
                             check_every=args.check_every, trace=trace).to_dict()
        if args.figure is not None:
            from .plots import queue_figure

            result.update(queue_figure(machine, trace, result["window"], args.figure,
                                       f"{machine.name} on {text!r}, W = {result['window']} ({args.executor})"))
            result["figure"] = str(args.figure)
        if args.trace is not None:
            W = result["window"]
            header = {"machine": machine.name, "input": text, "window": W, "vocab_size": result["vocab_size"] + 1,
                      "executor": args.executor, "prompt": trace[:W]}
            footer = {"halted": result["halted"], "tokens": len(trace) - W, "tm_steps": result["tm_steps"]}
            atomic_write_text(args.trace, trace_lines(header, trace[W:], footer))
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
        return 2 if result["error"].startswith("window too small") else MISMATCH
    return HALTED if result["halted"] else NOT_HALTED


def _cmd_space(args: argparse.Namespace) -> int:
    import json

    from ..core.atomic import atomic_write_text
    from ..core.errors import AttnlabError
    from .library import load_spec
    from .machine import PostMachine
    from .space import COLUMNS, DEFAULT_CASES, markdown, table_rows, threshold, window_sweep

    if args.below < 0 or args.above < 0:
        raise AttnlabError("--below and --above count windows: give non-negative numbers")
    offsets = range(-args.below, args.above + 1)
    with out_folder(args, "space experiment") as out:
        cases = [(spec, text) for spec in args.specs for text in (args.inputs or [None])] or list(DEFAULT_CASES)
        outcomes, summaries = [], []
        for spec, given in cases:
            machine, default = load_spec(spec)
            if isinstance(machine, PostMachine):
                raise AttnlabError(f"{spec}: a Post machine has no tape whose space to measure; give a Turing "
                                   f"machine")
            text = default if given is None else given
            sweep = window_sweep(machine, text, offsets, args.executor, args.max_steps)
            outcomes += sweep
            summaries.append(threshold(sweep))
        argv = ["attnlab", "machines", "space", *args.specs]
        argv += (["--inputs", *args.inputs] if args.inputs else []) + ["--below", str(args.below), "--above",
                                                                     str(args.above), "--executor", args.executor]
        command = shlex.join(argv + ["--max-steps", str(args.max_steps)])
        result = {"command": command, "thresholds": summaries, "runs": [o.to_dict() for o in outcomes],
                  "exact_at_and_above": all(s["exact_at_and_above"] for s in summaries)}
        if out is not None:
            atomic_write_text(out / "space.json", json.dumps(result, indent=1) + "\n")
            atomic_write_text(out / "space.md", markdown(outcomes, command + " -o DIR"))
            rec = _record(args, "machines-space", "machines: exact iff W >= s(n) - 1", command,
                          {"exact_at_and_above": result["exact_at_and_above"]},
                          {"cases": [[s["machine"], s["input"]] for s in summaries], "below": args.below,
                           "above": args.above, "executor": args.executor})
            rec.add_table("Runs at W = s(n) - 1 + k", list(COLUMNS), table_rows(outcomes), command=command)
            rec.add_table("Measured threshold per machine and input",
                          ["machine", "input", "s(n)", "s(n)-1", "measured", "exact below s(n)-1", "failing below"],
                          [[s["machine"], s["input"], s["space"], s["construction_threshold"],
                            s["measured_threshold"], s["exact_below"], s["failing_below"]] for s in summaries],
                          command=command)
            rec.save(out / "record.json")
    lines = [f"{s['machine']} on {s['input']!r}: s(n) = {s['space']}, exact from W = {s['measured_threshold']} "
             f"(s(n) - 1 = {s['construction_threshold']}); exact below: {s['exact_below'] or 'none'}, failing below: "
             f"{s['failing_below'] or 'none'}" for s in summaries]
    emit(args, result, "\n".join(lines))
    return HALTED if result["exact_at_and_above"] else MISMATCH


def _cmd_export(args: argparse.Namespace) -> int:
    from .artifact import build_export, write_export
    from .certificate import certify

    with out_folder(args, "compiled machine") as out:
        machine, text = _load(args)
        export = build_export(machine, text, args.window, args.max_steps)
        model = export.model
        cert = certify(model)
        certificate = {**cert.summary(), "certified": cert.complete}
        files = write_export(out, model, {**export.config, "certificate": certificate}, args.format)
        result = {"out": str(args.out), "format": args.format, "files": files, **model.sizes(),
                  "exported_vocab_size": model.vocab_size + 1, "prompt_tokens": len(export.prompt),
                  "exported_params": sum(int(t["shape"][0]) * (int(t["shape"][1]) if len(t["shape"]) > 1 else 1)
                                         for t in export.config["architecture"]["tensors"].values()),
                  "certified": certificate["certified"]}
        command = _command(args, text, model.window, *(["--format", args.format] if args.machines_command ==
                                                        "export" else []), "-o", str(args.out))
        config = {"spec": args.spec, "input": text, "window": model.window, "format": args.format}
        _record(args, f"machines-{args.machines_command}-{machine.name}",
                f"machines: {machine.name} exported for W={model.window} ({args.format})", command, result,
                config, None if result["certified"] else "not certified").save(out / "record.json")
    emit(args, result, f"wrote {args.out}/{', '.join(files)} ({args.format}): window {model.window}, vocab "
                       f"{model.vocab_size} + halt, d_model {model.d_model}, d_ffn {model.d_ffn}, {model.params:,} "
                       f"params ({model.model_bits:,} bits); certified: {result['certified']}")
    return HALTED if result["certified"] else MISMATCH


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import compare, read_trace, replay

    trace = read_trace(args.trace) if args.trace is not None else None
    device = args.device
    if args.runtime == "torch":
        from ..core.runtime import choose_device, configure

        configure(args.seed, args.threads or 1, torch=True)  # tiny matrices: more threads only add latency
        device = choose_device(args.device)
    budget = args.max_tokens if trace is None else len(trace[1]) + int(bool(trace[2].get("halted")))
    result = replay(args.folder, args.runtime, args.dtype, device, budget)
    summary = {"runtime": args.runtime, "dtype": args.dtype, **result.summary()}
    problem = compare(result, *trace) if trace is not None else None
    if trace is not None:
        summary["trace"], summary["matches_trace"] = str(args.trace), problem is None
    text = (f"{summary['machine']} on {summary['input']!r} ({args.runtime}, {args.dtype}, window {summary['window']}):"
            f" {summary['tokens']:,} tokens, halted {summary['halted']}, state {summary['final_state']}" +
            (f", tape from the head {summary['tape_from_head']!r}" if summary.get("tape_from_head") else "") +
            ("" if trace is None else f"; trace {'matches' if problem is None else 'DIFFERS'}"))
    emit(args, summary, text)
    if problem is not None:
        print(f"attnlab: error: replay differs from {args.trace}: {problem}", file=sys.stderr)
        return MISMATCH
    return HALTED


def _cmd_certify(args: argparse.Namespace) -> int:
    from .certificate import certify
    from .compile import compile_machine

    with out_folder(args, "machines certificate") as out:
        machine, text = _load(args)
        model = compile_machine(machine, _window(machine, text, args.window, args.max_steps))
        cert = certify(model, precision=args.max_bits >= 2, max_bits=args.max_bits)
        result = {"machine": machine.name, **model.sizes(), **cert.summary(), "certified": cert.complete}
        if out is not None:
            command = _command(args, text, model.window, "--max-bits", str(args.max_bits))
            config = {"spec": args.spec, "input": text, "window": model.window, "max_bits": args.max_bits}
            _record(args, f"machines-certify-{machine.name}", f"machines: certificate of {machine.name} at "
                    f"W={model.window}", command, result, config,
                    None if result["certified"] else "not certified").save(out / "record.json")
    passing = [r["format"] for r in cert.precision if r["complete"]]
    precision = ("" if not cert.precision else
                 f"; smallest precision p={cert.smallest_bits} ({', '.join(passing)})" if passing else
                 f"; no p-bit format up to p={args.max_bits} passes")
    verdict = "CERTIFIED" if cert.complete else "NOT CERTIFIED: " + "; ".join(cert.failures())
    emit(args, result, f"{machine.name}: {cert.pairs} (token, front) pairs, mismatches {cert.mismatches}, "
                       f"min logit margin {cert.min_margin:g}, halting tokens terminal {cert.terminal_ok}; "
                       f"lemma B at W={model.window}: {cert.lemma_b}, at every W >= 1: {cert.lemma_b_all_windows}"
                       f"{precision} -> {verdict}")
    return HALTED if result["certified"] else MISMATCH


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
