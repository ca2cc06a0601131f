"""The CLI stays light: help pages and the commands that need no model import neither torch nor
transformers (issue: `attnlab --help` took 2.5-10 s). Timing itself is measured in benchmarks/cli.py."""

import subprocess
import sys

import pytest

PROBE = ("import sys\nfrom attnlab.cli import main\nrc = main(sys.argv[1:])\n"
         "heavy = sorted(m for m in ('torch', 'transformers', 'scipy', 'matplotlib') if m in sys.modules)\n"
         "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\nsys.exit(rc)\n")


def _run(*argv: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY="), proc.stderr
    return proc.returncode, proc.stdout, [m for m in last[len("HEAVY="):].split(",") if m]


@pytest.mark.parametrize("argv", [
    ["--help"], ["tour", "--help"], ["report", "--help"],
    ["machines", "--help"], ["memorize", "--help"], ["nbl", "--help"], ["detr", "--help"], ["depth", "--help"],
    ["nbl", "apply", "--help"], ["detr", "train", "--help"], ["memorize", "search", "--help"],
    ["frobnicate"],
])
def test_help_imports_no_heavy_library(argv):
    rc, _, heavy = _run(*argv)
    assert rc in (0, 2) and heavy == []


@pytest.mark.parametrize("argv", [["machines", "run", "bb4"], ["machines", "list"],
                                  ["depth", "plan", "--params", "1.3B"]])
def test_model_free_commands_import_no_torch(argv):
    rc, out, heavy = _run(*argv)
    assert rc == 0 and out
    assert "torch" not in heavy and "transformers" not in heavy


def test_python_dash_m_attnlab():
    proc = subprocess.run([sys.executable, "-m", "attnlab", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("attnlab ")


def test_a_closed_stdout_is_not_an_error():
    """`attnlab machines list | head -0`: the reader is gone before the command writes; exit 141 (as SIGPIPE),
    nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "attnlab", "machines", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the interpreter has started
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""
