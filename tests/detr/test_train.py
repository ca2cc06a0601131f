import importlib
import json

import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.detr.model import CROSS_ATTENTION
from attnlab.detr.synthetic import make_synthetic
from attnlab.detr.train import CHECKPOINT, TrainConfig, load_run, read_checkpoint, train

from .conftest import TINY_MODEL


@pytest.mark.parametrize("levels", [0, 2], ids=list(CROSS_ATTENTION))
def test_tiny_overfit_reaches_high_ap50(tmp_path, levels):
    make_synthetic(tmp_path / "data", seed=0, n_train=8, n_val=2, image_size=32, min_size=12, max_size=16,
                   max_objects=2)
    cfg = TrainConfig(data=str(tmp_path / "data"), val_split="train", image_size=32, epochs=80, batch_size=8, lr=3e-3,
                      lr_drop=0.9, eval_every=80, device="cpu", model={**TINY_MODEL, "deformable_levels": levels})
    state = train(cfg, tmp_path / "run", progress=False)
    final = state["history"][-1]
    assert final["AP50"] >= 0.9, final
    assert final["loss"] < state["history"][0]["loss"] / 4


def _cfg(data, **kw):
    return TrainConfig(**{"data": str(data), "image_size": 32, "epochs": 2, "batch_size": 8, "eval_every": 1,
                          "device": "cpu", "model": {**TINY_MODEL, "dac": True}, **kw})


def test_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    full = train(_cfg(tiny_data, augment="scale"), tmp_path / "full", progress=False)

    calls = []

    def crash_after_first_epoch(path, entry):
        calls.append(entry)
        raise KeyboardInterrupt  # the process dies right after the epoch-1 checkpoint was committed

    monkeypatch.setattr(importlib.import_module("attnlab.detr.train"), "append_jsonl", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_data, augment="scale"), tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "resumed" / CHECKPOINT)[1]["epoch"] == 1
    resumed = train(_cfg(tiny_data, augment="scale"), tmp_path / "resumed", progress=False)

    a, _, _ = read_checkpoint(tmp_path / "full" / CHECKPOINT)
    b, _, _ = read_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = ("seconds_per_step",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in full["history"]] == \
           [{k: v for k, v in h.items() if k not in drop} for h in resumed["history"]]


def test_a_run_directory_refuses_another_configuration(tiny_data, tmp_path):
    train(_cfg(tiny_data), tmp_path / "run", progress=False)
    with pytest.raises(AttnlabError, match="another configuration.*lr"):
        train(_cfg(tiny_data, lr=5e-4), tmp_path / "run", progress=False)
    # a checkpoint whose config.json was edited to another model size is refused on load
    cfg_path = tmp_path / "run" / "config.json"
    saved = json.loads(cfg_path.read_text())
    saved["train"]["model"]["d_model"] = 64
    cfg_path.write_text(json.dumps(saved))
    with pytest.raises(AttnlabError, match="another model configuration"):
        load_run(tmp_path / "run")


def test_an_option_at_its_default_resumes_a_run_saved_without_it(tiny_data, tmp_path):
    train(_cfg(tiny_data, epochs=1), tmp_path / "run", progress=False)
    again = train(_cfg(tiny_data, epochs=1, loss={"o2m_topk": 6}), tmp_path / "run", progress=False)
    assert again["epoch"] == 1
    with pytest.raises(AttnlabError, match="another configuration.*loss"):
        train(_cfg(tiny_data, epochs=1, loss={"o2m_topk": 2}), tmp_path / "run", progress=False)


def test_a_run_remembers_its_annotations(tiny_data, tmp_path):
    import shutil

    from attnlab.detr.train import evaluate_run

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train(_cfg(data, epochs=1), tmp_path / "run", progress=False, quiet=True)
    assert evaluate_run(tmp_path / "run")[2]["annotations_as_recorded"] is True
    val = data / "annotations" / "instances_val.json"
    coco = json.loads(val.read_text())
    coco["annotations"] = coco["annotations"][1:]
    val.write_text(json.dumps(coco))
    with pytest.raises(AttnlabError, match="differs from the val annotations.*--allow-changed-data"):
        evaluate_run(tmp_path / "run")
    assert evaluate_run(tmp_path / "run", allow_changed_data=True)[2]["annotations_as_recorded"] is False
    with pytest.raises(AttnlabError, match="another configuration.*annotations.*--overwrite"):
        train(_cfg(data, epochs=1), tmp_path / "run", progress=False, quiet=True)
    again = train(_cfg(data, epochs=1), tmp_path / "run", progress=False, quiet=True, overwrite=True)
    assert again["epoch"] == 1 and len(again["history"]) == 1
