import json
import shlex
import subprocess
import sys

import pytest

from attnlab.core.records import RunRecord
from attnlab.machines.compile import load_compiled
from attnlab.machines.registry import EXECUTORS

FIELDS = {"halted", "final_state", "tape", "nonblank", "tm_steps", "tokens", "window", "vocab_size", "d_model",
          "params", "bits_per_param", "model_bits", "mismatches", "executor", "tokens_per_s"}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_run_bb4_json(run_cli, executor):
    rc, out, err = run_cli("machines", "run", "bb4", "--executor", executor, "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert FIELDS <= set(d)
    assert d["halted"] and d["tm_steps"] == 107 and d["nonblank"] == 13 and d["tape"] == "10111111111111"
    assert d["window"] == 13 and d["tokens"] == 804 and d["mismatches"] == 0 and d["executor"] == executor


def test_run_text_and_input(run_cli):
    rc, out, _ = run_cli("machines", "run", "binc", "--input", "111")
    assert rc == 0 and "'1000'" in out and "8 TM steps" in out


def test_run_yaml_file(run_cli, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text('name: flip\ntransitions:\n  A: {"0": ["1", R, A], "1": ["0", R, A]}\n')
    rc, out, _ = run_cli("machines", "run", str(f), "--input", "0110", "--json")
    d = json.loads(out)
    assert rc == 0 and d["tape"] == "1001" and d["final_state"] == "A" and d["tm_steps"] == 4


def test_post_machine_run(run_cli):
    rc, out, _ = run_cli("machines", "run", "rotate", "--json")
    d = json.loads(out)
    assert rc == 0 and d["tape"] == "abba_" and d["tokens"] == 3 and d["mismatches"] == 0


def test_not_halting_exit_3(run_cli):
    rc, out, _ = run_cli("machines", "run", "bcount", "--input", "#000000", "--max-steps", "30", "--json")
    d = json.loads(out)
    assert rc == 3 and d["halted"] is False and d["tm_steps"] == 30


def test_window_too_small_exit_2(run_cli):
    rc, out, err = run_cli("machines", "run", "bb4", "--window", "10", "--json")
    assert rc == 2 and json.loads(out)["mismatches"] == 1
    assert err.count("\n") == 1 and "window too small" in err and "--window 13" in err


@pytest.mark.parametrize("argv, fragment", [
    (["machines", "run", "nosuch"], "unknown machine"),
    (["machines", "run", "binc", "--input", "12"], "not in the alphabet"),
    (["machines", "run", "1RB1LB_1LA0L"], "state B has 5 characters"),
    (["machines", "run", "bb4", "--executor", "gpu"], "invalid choice"),
    (["machines", "run", "bb4", "--window", "0"], "positive integer"),
    (["machines", "run", "uadd", "--input", "1111111", "--window", "3"], "needs a window of at least 6"),
])
def test_bad_input_one_line_exit_2(run_cli, argv, fragment):
    rc, out, err = run_cli(*argv)
    assert rc == 2 and fragment in err and err.count("\n") == 1 and out == ""


def test_malformed_yaml_names_the_line(run_cli, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text('name: bad\ntransitions:\n  A: {"0": ["1", R, A]}\n  B: {"0": ["1", UP, A]}\n')
    rc, _, err = run_cli("machines", "run", str(f))
    assert rc == 2 and f"{f}:4: state 'B' reading '0': move must be L or R" in err


def test_compile_and_certify(run_cli, tmp_path):
    rc, out, _ = run_cli("machines", "compile", "pal", "--input", "abba", "-o", tmp_path / "pal", "--json")
    d = json.loads(out)
    assert rc == 0 and d["certified"] and d["window"] == 4
    back = load_compiled(tmp_path / "pal")
    assert back.params == d["params"] and back.vocab_size == d["vocab_size"]
    config = json.loads((tmp_path / "pal" / "config.json").read_text())
    assert config["certificate"]["certified"] and len(config["vocabulary"]["tokens"]) == d["vocab_size"] + 1
    rc, out, _ = run_cli("machines", "certify", "bb4", "--window", "100000", "--json")
    d = json.loads(out)
    assert rc == 0 and d["certified"] and d["lemma_b"] and d["lemma_b_all_windows"] and d["window"] == 100000
    assert d["smallest_bits"] == 3 and [r["complete"] for r in d["precision"]] == [False, True, True]


def test_list(run_cli):
    rc, out, _ = run_cli("machines", "list", "--json")
    names = {m["name"] for m in json.loads(out)["machines"]}
    assert rc == 0 and {"binc", "uadd", "pal", "copy", "bcount", "parens", "bb2", "bb3", "bb4", "bb5", "utm"} <= names


def test_help_has_examples(run_cli):
    for cmd in ("run", "compile", "export", "replay", "certify", "list"):
        rc, out, _ = run_cli("machines", cmd, "--help")
        assert rc == 0 and "Example: attnlab machines" in out
    rc, out, _ = run_cli("machines", "--help")
    assert rc == 0 and "Example: attnlab machines" in out


def test_executor_choices_are_the_registry(run_cli):
    rc, out, _ = run_cli("machines", "run", "--help")
    assert rc == 0 and "{" + ",".join(EXECUTORS) + "}" in out


def test_run_record_reproduces_the_run(run_cli, tmp_path):
    rc, out, _ = run_cli("machines", "run", "binc", "--executor", "kv", "-o", tmp_path / "r", "--json")
    assert rc == 0
    rec = RunRecord.load(tmp_path / "r" / "record.json")
    assert rec.status == "ok" and rec.metrics["tape"] == "1100" and rec.config["window"] == json.loads(out)["window"]
    argv = shlex.split(rec.command)
    assert argv[:3] == ["attnlab", "machines", "run"] and "--input" in argv and "--window" in argv
    rc, again, _ = run_cli(*argv[1:], "--json")
    assert rc == 0 and {k: v for k, v in json.loads(again).items() if "per_s" not in k and k != "seconds"} == \
        {k: v for k, v in rec.metrics.items() if "per_s" not in k and k != "seconds"}


def test_certify_record(run_cli, tmp_path):
    rc, _, _ = run_cli("machines", "certify", "bb2", "-o", tmp_path / "c")
    rec = RunRecord.load(tmp_path / "c" / "record.json")
    assert rc == 0 and rec.metrics["certified"] and "--window 3" in rec.command


def test_light_commands_import_neither_torch_nor_transformers():
    """`machines list/run/certify/compile/space` and `run --figure` run on numpy (and matplotlib) alone (a fresh
    interpreter: the tests import torch)."""
    code = ("import sys, tempfile; from attnlab.cli import main\n"
            "d = tempfile.mkdtemp()\n"
            "for argv in (['list'], ['run', 'bb4'], ['run', 'bb4', '--executor', 'reference'],\n"
            "             ['run', 'bb2', '--executor', 'kv'], ['run', 'bb2', '--executor', 'dense'],\n"
            "             ['certify', 'bb2'], ['compile', 'bb2', '-o', d + '/m'],\n"
            "             ['run', 'bb2', '--figure', d + '/f.png'], ['space', 'bb2']):\n"
            "    assert main(['machines', *argv, '--quiet']) == 0, argv\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'scipy') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_group_without_command_and_common_flags(run_cli):
    rc, out, _ = run_cli("machines")
    assert rc == 2 and out == ""
    rc, out, _ = run_cli("machines", "run", "bb2", "--threads", "1", "--seed", "3", "--json")
    assert rc == 0 and json.loads(out)["tm_steps"] == 6


def test_run_trace_export_replay_round_trip(run_cli, tmp_path):
    """run --trace -> export -> replay --trace in both runtimes; a tampered trace is a mismatch (exit 4)."""
    trace = tmp_path / "bb4.jsonl"
    assert run_cli("machines", "run", "bb4", "--executor", "kv", "--trace", trace)[0] == 0
    lines = trace.read_text().splitlines()
    header, footer = json.loads(lines[0]), json.loads(lines[-1])
    assert header["window"] == 13 and len(header["prompt"]) == 13 and footer == {"halted": True, "tokens": 804,
                                                                                 "tm_steps": 107}
    assert len(lines) == 804 + 2 and all(line.isdigit() for line in lines[1:-1])
    for fmt, runtime in (("onnx", "onnx"), ("hf", "torch")):
        rc, out, err = run_cli("machines", "export", "bb4", "--format", fmt, "-o", tmp_path / fmt, "--json")
        assert rc == 0 and json.loads(out)["certified"], err
        rc, out, err = run_cli("machines", "replay", tmp_path / fmt, "--runtime", runtime, "--trace", trace, "--json")
        d = json.loads(out)
        assert rc == 0 and d["matches_trace"] and d["tm_steps"] == 107 and d["nonblank"] == 13, err
    lines[100] = str((int(lines[100]) + 1) % 88)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    rc, out, err = run_cli("machines", "replay", tmp_path / "onnx", "--trace", bad)
    assert rc == 4 and "token 100 differs" in err and err.count("\n") == 1
    assert (tmp_path / "hf" / "modeling_machine.py").is_file()


def test_yaml_input_is_the_default_input(run_cli, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text('name: flip\ninput: "0110"\ntransitions:\n  A: {"0": ["1", R, A], "1": ["0", R, A]}\n')
    d = json.loads(run_cli("machines", "run", f, "--json")[1])
    assert d["input"] == "0110" and d["tape"] == "1001"
    d = json.loads(run_cli("machines", "run", f, "--input", "1", "--json")[1])
    assert d["input"] == "1" and d["tape"] == "0"


def test_compile_refuses_a_window_too_small(run_cli, tmp_path):
    rc, out, err = run_cli("machines", "compile", "bb4", "--window", "10", "-o", tmp_path / "bb4")
    assert rc == 2 and "window too small" in err and "--window 13" in err and not (tmp_path / "bb4").exists()
