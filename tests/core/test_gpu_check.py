"""benchmarks/gpu_check.py: every step is a valid attnlab command, and without CUDA it is one line, exit 2."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnlab.cli import build_parser

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ray", [False, True])
def test_every_step_parses_as_an_attnlab_command(tmp_path, ray):
    gpu_check = _load()
    plan = gpu_check.steps(tmp_path, ray)
    assert [name for name, _ in plan].count("depth sweep, Ray") == int(ray)
    for name, argv in plan:
        args = build_parser().parse_args(gpu_check.device_argv(name, argv, "cuda:0"))
        assert args.json and args.quiet and getattr(args, "device", "cuda:0") == "cuda:0", name


def test_without_cuda_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    before = SCRIPT.parent.joinpath("results", "gpu_check.json").read_bytes() \
        if SCRIPT.parent.joinpath("results", "gpu_check.json").exists() else None
    proc = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path / "w")], capture_output=True,
                          text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in proc.stderr
    assert not (tmp_path / "w").exists()
    after = SCRIPT.parent.joinpath("results", "gpu_check.json")
    assert (after.read_bytes() if after.exists() else None) == before
