"""Bad invocations of `attnlab detr`: each exits with code 2 and one line on stderr, before any long work,
and leaves every file that was there byte-identical. Also: --overwrite replaces, the same run resumes."""

import json
import os
import shutil

import pytest

from attnlab.detr.train import TrainConfig, train

from .conftest import TINY_MODEL

TRAIN = ["--d-model", "32", "--queries", "8", "--batch-size", "8", "--image-size", "32", "--epochs", "1",
         "--device", "cpu", "--quiet"]


def snapshot(root):
    """Every file under ``root`` (or the file itself) with its bytes."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fails(run_cli, *argv, fragment):
    rc, out, err = run_cli(*argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and fragment in lines[0], (rc, err)
    assert "Traceback" not in err and ".partial" not in err and out == ""
    return lines[0]


@pytest.fixture
def data(tiny_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A one-epoch run (trained on the session's tiny data through the API)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(data=str(tiny_data), image_size=32, epochs=1, batch_size=8, device="cpu",
                      model=TINY_MODEL), run, progress=False, quiet=True)
    return run


def _edit_annotations(data, split, edit):
    path = data / "annotations" / f"instances_{split}.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


def test_make_data_refuses_an_existing_dataset(run_cli, data):
    before = snapshot(data)
    fails(run_cli, "detr", "make-data", "synthetic-digits", "-o", data, "--n-train", "4", fragment="--overwrite")
    assert snapshot(data) == before


def test_make_data_refuses_a_file_where_a_folder_belongs(run_cli, tmp_path):
    (tmp_path / "f").write_text("keep")
    fails(run_cli, "detr", "make-data", "synthetic-digits", "-o", tmp_path / "f", fragment="is a file")
    fails(run_cli, "detr", "make-data", "synthetic-digits", "-o", tmp_path / "f" / "sub", fragment="is a file")
    assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_make_data_refuses_an_unwritable_parent(run_cli, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    fails(run_cli, "detr", "make-data", "synthetic-digits", "-o", tmp_path / "ro" / "d", fragment="not writable")


@pytest.mark.parametrize("flags, fragment", [
    (["--min-objects", "4", "--max-objects", "2"], "min_objects"),
    (["--n-train", "0"], "positive integer"),
    (["--max-size", "99"], "max_size <= image_size"),
], ids=["objects", "count", "size"])
def test_make_data_bad_values(run_cli, tmp_path, flags, fragment):
    fails(run_cli, "detr", "make-data", "synthetic-digits", "-o", tmp_path / "d", *flags, fragment=fragment)
    assert not (tmp_path / "d").exists()


def test_train_refuses_a_folder_it_did_not_write(run_cli, tiny_data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    fails(run_cli, "detr", "train", "--data", tiny_data, *TRAIN, "-o", tmp_path / "mine", fragment="--overwrite")
    assert snapshot(tmp_path / "mine") == {"notes.txt": b"keep"}


def test_train_refuses_another_configuration_in_a_run_folder(run_cli, tiny_data, trained):
    before = snapshot(trained)
    line = fails(run_cli, "detr", "train", "--data", tiny_data, *TRAIN, "--lr", "0.01", "-o", trained,
                 fragment="another configuration")
    assert "lr" in line and "--overwrite" in line
    assert snapshot(trained) == before


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c["annotations"][0].update(category_id=str(c["annotations"][0]["category_id"])), "not an integer"),
    (lambda c: c["images"].append(dict(c["images"][0])), "appears twice in 'images'"),
    (lambda c: c.pop("categories"), "missing or non-list 'categories'"),
    (lambda c: c["annotations"][0].update(category_id=7.0), "category_id 7.0 in 'annotations' is not an integer"),
    (lambda c: c["images"][0].update(file_name=3), "has file_name 3"),
    (lambda c: c["annotations"][0].pop("area"), "COCOeval needs every box's area"),
    (lambda c: c["annotations"][0].update(bbox="x"), "a COCO box is [x, y, width, height]"),
], ids=["string-category-id", "duplicate-image-id", "no-categories", "float-category-id", "int-file-name", "no-area",
        "string-bbox"])
def test_train_refuses_malformed_coco(run_cli, data, tmp_path, edit, fragment):
    _edit_annotations(data, "train", edit)
    fails(run_cli, "detr", "train", "--data", data, *TRAIN, "-o", tmp_path / "run", fragment=fragment)
    assert not (tmp_path / "run").exists()


def test_train_and_eval_refuse_missing_inputs(run_cli, tmp_path):
    fails(run_cli, "detr", "train", "--data", tmp_path / "nope", *TRAIN, "-o", tmp_path / "run", fragment="make-data")
    fails(run_cli, "detr", "eval", tmp_path, fragment="is not a detr run")


def test_eval_refuses_changed_annotations_and_existing_output(run_cli, data, tmp_path):
    run = tmp_path / "run"
    assert run_cli("detr", "train", "--data", data, *TRAIN, "-o", run)[0] == 0
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "record.json").write_text("{}")
    fails(run_cli, "detr", "eval", run, "-o", tmp_path / "out", fragment="--overwrite")
    assert snapshot(tmp_path / "out") == {"record.json": b"{}"}
    _edit_annotations(data, "val", lambda c: c["annotations"].pop())
    fails(run_cli, "detr", "eval", run, fragment="--allow-changed-data")
    assert run_cli("detr", "eval", run, "--allow-changed-data", "--json")[0] == 0


def test_predict_refuses_existing_output_missing_images_and_bad_threshold(run_cli, trained, tiny_data, tmp_path):
    image = tiny_data / "val" / "000001.png"
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "a.png").write_bytes(b"old")
    fails(run_cli, "detr", "predict", trained, image, "-o", tmp_path / "preds", fragment="--overwrite")
    assert snapshot(tmp_path / "preds") == {"a.png": b"old"}
    fails(run_cli, "detr", "predict", trained, tmp_path / "gone.png", "-o", tmp_path / "p2", fragment="gone.png")
    assert not (tmp_path / "p2").exists()
    fails(run_cli, "detr", "predict", trained, image, "--threshold", "2", "-o", tmp_path / "p3", fragment="0 to 1")


def test_outputs_never_replace_the_inputs(run_cli, trained, data, tmp_path):
    before = snapshot(trained)
    fails(run_cli, "detr", "eval", trained, "-o", trained, "--overwrite", fragment="an input of this command")
    fails(run_cli, "detr", "predict", trained, data / "val" / "000001.png", "-o", trained.parent, "--overwrite",
          fragment="an input of this command")
    assert snapshot(trained) == before
    fails(run_cli, "detr", "train", "--data", data, *TRAIN, "-o", data, "--overwrite", fragment="an input")
    assert (data / "annotations" / "instances_train.json").is_file()


def test_compare_refuses_a_file_as_its_folder(run_cli, tiny_data, tmp_path):
    (tmp_path / "cmp").write_text("keep")
    fails(run_cli, "detr", "compare", "--data", tiny_data, *TRAIN, "-o", tmp_path / "cmp", fragment="is a file")
    assert (tmp_path / "cmp").read_text() == "keep"


def test_compare_refuses_a_ray_address_without_the_ray_backend(run_cli, tiny_data, tmp_path):
    fails(run_cli, "detr", "compare", "--data", tiny_data, *TRAIN, "--ray-address", "auto", "-o", tmp_path / "cmp",
          fragment="--ray-address needs --backend ray")
    assert not (tmp_path / "cmp").exists()


def test_make_data_overwrite_replaces_the_dataset_whole(run_cli, data):
    stale = data / "train" / "999999.png"
    stale.write_bytes(b"stale")
    rc, _, _ = run_cli("detr", "make-data", "synthetic-digits", "-o", data, "--n-train", "3", "--n-val", "2",
                       "--image-size", "32", "--max-size", "14", "--overwrite")
    assert rc == 0 and not stale.exists()
    assert sorted(p.name for p in (data / "train").iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_the_same_run_resumes_in_one_line_and_overwrite_restarts(run_cli, tiny_data, tmp_path):
    run = tmp_path / "run"
    flags = ["detr", "train", "--data", tiny_data, *[f for f in TRAIN if f != "--quiet"], "-o", run]
    assert run_cli(*flags)[0] == 0
    rc, _, err = run_cli(*flags)
    assert rc == 0 and err.strip().splitlines() == [f"attnlab: resuming the detr training run in {run}"]
    rc, _, err = run_cli(*flags, "--overwrite", "--quiet")
    assert rc == 0 and err == "" and len((run / "log.jsonl").read_text().splitlines()) == 1
