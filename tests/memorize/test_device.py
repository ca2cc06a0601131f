"""``--device`` and ``--dtype`` of ``attnlab memorize``: a CUDA request on a machine without CUDA is exit 2 with
one line before anything is written; ``--device cpu --dtype bfloat16`` runs end to end (in every sweep worker)
and the run records say so."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.memorize import peft_adapter, search
from attnlab.memorize.sweep import LOG, sweep_log

TINY = ["--n-pairs", "4", "--seq-len", "2", "--vocab", "8", "--n-classes", "4", "--d-model", "8", "--n-heads", "2",
        "--n-layers", "1", "--d-ff", "8", "--max-steps", "2", "--m-max", "2", "--restarts", "1"]
SWEEP = {"base": {"n_pairs": 4, "seq_len": 2, "vocab": 8, "n_classes": 4, "d_model": 8, "n_heads": 2, "n_layers": 1,
                  "d_ff": 8, "max_steps": 2, "m_max": 2, "restarts": 1},
         "experiments": {"n_pairs": {"n_pairs": [4, 6]}}}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path, monkeypatch):
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", [["search", *TINY, "-o", "out"], ["sweep", "sweep.yaml", "-o", "out"],
                                     ["peft", *TINY, "-o", "out"]], ids=["search", "sweep", "peft"])
def test_cuda_without_cuda_is_exit_2_in_one_line_and_writes_nothing(ws, monkeypatch, capsys, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CUDA-less, whatever this machine has
    monkeypatch.setattr(search, "fit_prompts", lambda *a, **k: pytest.fail("a prompt was fitted"))
    monkeypatch.setattr(peft_adapter, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    before = snapshot(ws)
    assert main(["memorize", *command, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err and "--device cpu" in err
    assert snapshot(ws) == before


def test_search_in_bfloat16_on_cpu_records_device_and_dtype(ws, capsys):
    assert main(["memorize", "search", *TINY, "--device", "cpu", "--dtype", "bfloat16", "-o", "out", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["device"], out["dtype"]) == ("cpu", "bfloat16") and len(out["probes"]) == 2
    record = json.loads((ws / "out" / "record.json").read_text())
    assert (record["config"]["device"], record["config"]["dtype"]) == ("cpu", "bfloat16")
    assert record["command"].endswith("--device cpu --dtype bfloat16")


def test_sweep_workers_run_in_the_dtype_asked_and_a_float32_rerun_is_refused(ws, capsys):
    assert main(["memorize", "sweep", "sweep.yaml", "-o", "out", "--workers", "2", "--device", "cpu",
                 "--dtype", "bfloat16", "--quiet"]) == 0
    results = list(sweep_log(ws / "out" / LOG).results().values())
    assert len(results) == 2 and {(r["device"], r["dtype"]) for r in results} == {("cpu", "bfloat16")}
    record = json.loads((ws / "out" / "record.json").read_text())
    assert (record["config"]["device"], record["config"]["dtype"]) == ("cpu", "bfloat16")
    capsys.readouterr()
    log = (ws / "out" / LOG).read_bytes()
    assert main(["memorize", "sweep", "sweep.yaml", "-o", "out", "--device", "cpu"]) == 2  # float32 is another run
    assert "--overwrite" in capsys.readouterr().err and (ws / "out" / LOG).read_bytes() == log


def test_peft_in_bfloat16_on_cpu_records_device_and_dtype(ws, capsys):
    assert main(["memorize", "peft", *TINY, "--device", "cpu", "--dtype", "bfloat16", "-o", "out", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["device"], out["dtype"]) == ("cpu", "bfloat16")
    record = json.loads((ws / "out" / "record.json").read_text())
    assert (record["config"]["device"], record["config"]["dtype"]) == ("cpu", "bfloat16")
