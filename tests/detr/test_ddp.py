"""torchrun DDP on the CPU (gloo): two processes train what one process trains with the same global batch,
and the launches that cannot work are refused with one line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.detr.distributed import shard_batches
from attnlab.detr.train import CHECKPOINT, read_checkpoint

from .test_cli_errors import TRAIN, fails

#: 24 training images in batches of 5: shares of 3 and 2 images, and a last batch of 4. lr 1e-2 makes the
#: AP of epoch 2 non-zero, so that a val share missing from the gathered detections would show.
FLAGS = ["--d-model", "32", "--queries", "8", "--batch-size", "5", "--lr", "1e-2", "--image-size", "32",
         "--epochs", "2", "--device", "cpu", "--dac", "--threads", "1", "--json"]


def _torchrun(*argv, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "attnlab", *map(str, argv)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _trained(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` without the key bias of a packed attention ``in_proj_bias`` (its middle third): softmax ignores a
    bias added to every key, so its exact gradient is zero and Adam moves it by normalised rounding noise, which
    differs between one process and two by rounding alone (seen at 1.04e-4 on an Intel Xeon)."""
    if not name.endswith("in_proj_bias"):
        return value
    d = value.numel() // 3
    return torch.cat([value[:d], value[2 * d:]])


def test_two_gloo_processes_train_the_one_process_run(tiny_data, tmp_path, run_cli):
    two = _torchrun("detr", "train", "--data", tiny_data, *FLAGS, "-o", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    rc, out, _ = run_cli("detr", "train", "--data", tiny_data, *FLAGS, "-o", tmp_path / "one")
    assert rc == 0

    assert json.loads(two.stdout)["steps"] == json.loads(out)["steps"] == 10   # rank 0 alone prints its JSON
    assert [sum(f"epoch {e}/2 step" in line for line in two.stderr.splitlines()) for e in (1, 2)] == [1, 1]
    files = [sorted(p.name for p in (tmp_path / run).iterdir()) for run in ("one", "two")]
    assert files[0] == files[1] and CHECKPOINT in files[1] and not any(".partial" in f for f in files[1])
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "two" / "config.json").read_text())["env"]["processes"] == 2

    a, state_a, _ = read_checkpoint(tmp_path / "one" / CHECKPOINT)
    b, state_b, _ = read_checkpoint(tmp_path / "two" / CHECKPOINT)
    for k in (k for k in a if k.startswith("model.")):
        torch.testing.assert_close(_trained(k, b[k]), _trained(k, a[k]), rtol=1e-3, atol=1e-4, msg=k)
    assert state_a["history"][-1]["AP50"] > 0
    for ha, hb in zip(state_a["history"], state_b["history"], strict=True):
        assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-4)
        assert {k: v for k, v in hb.items() if k not in ("loss", "seconds_per_step")} == \
               pytest.approx({k: v for k, v in ha.items() if k not in ("loss", "seconds_per_step")}, abs=1e-3)


@pytest.mark.parametrize("n, batch, world", [(24, 5, 2), (23, 8, 2), (25, 8, 2), (10, 4, 3), (1, 2, 2), (7, 7, 1)])
def test_every_process_gets_its_share_of_every_step_and_none_is_empty(n, batch, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()
    shares = [shard_batches(order, batch, rank, world) for rank in range(world)]
    alone = shard_batches(order, batch, 0, 1)
    assert all(len(s) == len(alone) for s in shares) and all(b for s in shares for b in s)
    for step, whole in enumerate(alone):
        dealt = [s[step] for s in shares]
        assert max(map(len, dealt)) - min(map(len, dealt)) <= 1
        if len(whole) >= world:                                   # the one-process batch, dealt out
            assert sorted(i for d in dealt for i in d) == sorted(whole)
        else:                                                     # padded with the epoch's first images
            assert [d[0] for d in dealt] == whole + order[:world - len(whole)]
    with pytest.raises(AttnlabError, match="at least one image per process"):
        shard_batches(order, world - 1, 0, world)


def test_world_size_without_torchrun_is_one_line(run_cli, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    fails(run_cli, "detr", "train", "--data", tiny_data, *TRAIN, "-o", tmp_path / "run",
          fragment="WORLD_SIZE=2 but no process group can be made (RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset)")
    monkeypatch.setenv("WORLD_SIZE", "two")
    fails(run_cli, "detr", "train", "--data", tiny_data, *TRAIN, "-o", tmp_path / "run", fragment="WORLD_SIZE='two'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["train"], ["compare", "--seeds", "1"]])
def test_amp_on_the_cpu_is_refused(run_cli, tiny_data, tmp_path, command):
    fails(run_cli, "detr", *command, "--data", tiny_data, *TRAIN, "--amp", "-o", tmp_path / "run",
          fragment="--amp (bfloat16 autocast) runs on CUDA only")
    assert not (tmp_path / "run").exists()
