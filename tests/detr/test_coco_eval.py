"""COCO evaluation as the ecosystem does it: pycocotools scores against the annotation file as it is, and
`detr eval --save-predictions` writes a results JSON with the file's own image and category ids that
``COCO.loadRes`` reads, giving the AP attnlab reported."""

import contextlib
import io
import json
import shutil
from collections import defaultdict

import pytest

from attnlab.detr.train import TrainConfig, evaluate_run, train

from .conftest import TINY_MODEL

#: Image ids far from 0..N-1 and category ids neither contiguous nor in the labels' order.
IMAGE_ID = {i: 1000 + 7 * i for i in range(1, 100)}
CATEGORY_ID = {c: 300 - 11 * c for c in range(1, 11)}


def _renumber(path, extra_box=None):
    coco = json.loads(path.read_text())
    for im in coco["images"]:
        im["id"] = IMAGE_ID[im["id"]]
    for c in coco["categories"]:
        c["id"] = CATEGORY_ID[c["id"]]
    for a in coco["annotations"]:
        a.update(image_id=IMAGE_ID[a["image_id"]], category_id=CATEGORY_ID[a["category_id"]])
    if extra_box:
        coco["annotations"].append({"id": 10_000, "image_id": coco["images"][0]["id"],
                                    "category_id": coco["categories"][0]["id"], "bbox": extra_box,
                                    "area": extra_box[2] * extra_box[3], "iscrowd": 0})
    path.write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def renumbered(tiny_data, tmp_path_factory):
    """The tiny data with renumbered ids (and, in val, a box reaching past the image: the cleaned training
    target would be clipped, the file's box is not), and a one-epoch run on it."""
    root = tmp_path_factory.mktemp("renumbered")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    _renumber(data / "annotations" / "instances_train.json")
    _renumber(data / "annotations" / "instances_val.json", extra_box=[20, 18, 30, 25])
    run = root / "run"
    train(TrainConfig(data=str(data), image_size=32, epochs=1, batch_size=8, device="cpu", model=TINY_MODEL),
          run, progress=False, quiet=True)
    return data, run


def _cocoeval(ann_file, results_file):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_saved_predictions_are_pycocotools_results_with_the_files_ids(run_cli, renumbered, tmp_path):
    data, run = renumbered
    preds = tmp_path / "val-results.json"
    rc, out, err = run_cli("detr", "eval", run, "--save-predictions", preds, "--batch-size", "3", "--device", "cpu",
                           "--json", "-o", tmp_path / "eval")
    assert rc == 0, err
    res = json.loads(out)
    dets = json.loads(preds.read_text())
    assert res["detections"] == len(dets) == 8 * 80           # 8 val images, 8 queries x 10 classes (< top 100)
    assert {d["image_id"] for d in dets} == {IMAGE_ID[i] for i in range(1, 9)}
    assert {d["category_id"] for d in dets} == set(CATEGORY_ID.values())
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} and len(d["bbox"]) == 4 for d in dets)
    # The ecosystem's evaluation of the file, against the original annotation file, is attnlab's.
    stats = _cocoeval(data / "annotations" / "instances_val.json", preds)
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert [res[k] for k in names] == [None if s < 0 else round(float(s), 4) for s in stats[:6]]
    assert res["AP50"] > 0                                    # a trained model, not an all-zero table
    assert json.loads((tmp_path / "eval" / "record.json").read_text())["config"]["predictions"] == str(preds)


def test_the_ground_truth_is_the_annotation_file_not_the_cleaned_targets(renumbered):
    from attnlab.detr.data import open_split

    data, _ = renumbered
    ds = open_split(data, "val")
    box = ds.coco.anns[10_000]["bbox"]
    assert box == [20, 18, 30, 25]                            # as in the file: COCOeval matches against this box
    image = ds.ids.index(ds.coco.anns[10_000]["image_id"])
    _, target = ds[image]
    clipped = [26.0, 25.0, 12.0, 14.0]                        # cxcywh of [20, 18, 32, 32]: clipped to 32 x 32
    assert any(b == pytest.approx(clipped) for b in (target["boxes"] * 32).tolist())


def test_batch_size_does_not_change_the_detections(renumbered):
    _, run = renumbered
    one = evaluate_run(run, batch_size=1).detections
    many = evaluate_run(run, batch_size=64).detections

    def by_key(dets):
        out = defaultdict(list)
        for d in dets:
            out[d["image_id"], d["category_id"]].append(d["score"])
        return {k: sorted(v) for k, v in out.items()}

    a, b = by_key(one), by_key(many)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-5)


def test_save_predictions_keeps_an_existing_file_and_a_missing_device_is_refused(run_cli, renumbered, tmp_path):
    _, run = renumbered
    (tmp_path / "p.json").write_text("keep")
    rc, out, err = run_cli("detr", "eval", run, "--save-predictions", tmp_path / "p.json")
    assert rc == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1 and out == ""
    assert (tmp_path / "p.json").read_text() == "keep"
    assert run_cli("detr", "eval", run, "--save-predictions", tmp_path / "p.json", "--overwrite")[0] == 0
    assert isinstance(json.loads((tmp_path / "p.json").read_text()), list)
    rc, _, err = run_cli("detr", "eval", run, "--device", "cuda:99")
    assert rc == 2 and "cuda:99" in err and len(err.strip().splitlines()) == 1
