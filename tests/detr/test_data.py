import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.core.errors import AttnlabError
from attnlab.detr.data import CocoDetection, collate, crop, hflip, make_transforms, open_split, resize
from attnlab.detr.synthetic import make_synthetic


def test_synthetic_digits_is_valid_coco_with_tight_boxes(tiny_data):
    from pycocotools.coco import COCO

    coco = COCO(str(tiny_data / "annotations" / "instances_train.json"))
    assert len(coco.getImgIds()) == 24 and len(coco.getCatIds()) == 10
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"] and w >= 1 and h >= 1
        pixels = np.asarray(Image.open(tiny_data / "train" / img["file_name"]))
        assert pixels[int(y):int(y + h), int(x):int(x + w)].max() > 40     # the box holds the drawn digit


def test_synthetic_data_is_deterministic_and_shapes_variant_works(tmp_path):
    make_synthetic(tmp_path / "a", seed=3, n_train=4, n_val=2, image_size=32, max_size=12)
    make_synthetic(tmp_path / "b", seed=3, n_train=4, n_val=2, image_size=32, max_size=12)
    for f in ("annotations/instances_train.json", "train/000002.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    res = make_synthetic(tmp_path / "s", "synthetic-shapes", n_train=4, n_val=2, image_size=32, max_size=12)
    assert res["splits"]["train"]["objects"] >= 4
    assert len(open_split(tmp_path / "s", "train").names) == 3


def _write_coco(root, images, annotations, categories, make_files=True):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    if make_files:
        for im in images:
            if not isinstance(im, dict) or not isinstance(im["file_name"], str) or type(im["width"]) is not int:
                continue                                        # a malformed entry: refused before files are read
            Image.new("RGB", (im["width"], im["height"]), (30, 30, 30)).save(root / "train" / im["file_name"])
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def _ann(i, image_id, category_id, bbox, iscrowd=0):
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": bbox[2] * bbox[3],
            "iscrowd": iscrowd}


def test_loader_remaps_categories_ignores_crowd_and_counts_empty_boxes(tmp_path):
    images = [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}]
    cats = [{"id": 90, "name": "late"}, {"id": 3, "name": "early"}]
    anns = [_ann(1, 7, 90, [30, 10, 20, 10]),                  # clipped to x 30..40
            _ann(2, 7, 3, [0, 0, 10, 10], iscrowd=1),
            _ann(3, 7, 3, [50, 50, 5, 5]),                     # outside: not trained on
            _ann(4, 7, 3, [1, 2, 0, 3])]                       # empty: not trained on
    _write_coco(tmp_path, images, anns, cats)
    with pytest.warns(UserWarning, match="2 empty or out-of-image"):
        ds = open_split(tmp_path, "train")
    assert ds.names == ["early", "late"] and ds.cat_to_label == {3: 0, 90: 1}
    x, t = ds[0]
    assert x.shape == (3, 30, 40)
    assert t["labels"].tolist() == [1]                                                   # crowd box not trained on
    assert t["boxes"][0].tolist() == pytest.approx([35 / 40, 15 / 30, 10 / 40, 10 / 30])
    # COCOeval scores against the file as it is: every box, unclipped (DETR evaluates on COCO(ann_file) too)
    assert ds.coco.dataset["annotations"] == anns and ds.coco.anns[1]["bbox"] == [30, 10, 20, 10]


def test_image_sizes_that_disagree_with_the_files_are_one_counted_warning(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 30} for i in (1, 2, 3)]
    _write_coco(tmp_path, images, [_ann(1, 1, 1, [30, 10, 20, 10]), _ann(2, 2, 1, [2, 2, 5, 5])],
                [{"id": 1, "name": "x"}])
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    data["images"][0].update(width=64, height=32)                           # the file is 40 x 30
    data["images"][2].update(width=20)
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning) as caught:
        ds = open_split(tmp_path, "train")
    assert len(caught) == 1
    assert "2 image(s) whose width/height differ" in str(caught[0].message) and "64x32 in the JSON, 40x30" in \
        str(caught[0].message)
    _, t = ds[0]                                              # clipped to the file's 40 px, not the JSON's 64
    assert t["boxes"][0].tolist() == pytest.approx([35 / 40, 15 / 30, 10 / 40, 10 / 30])


@pytest.mark.parametrize("content, message", [
    ("{not json", "malformed COCO JSON"),
    (json.dumps({"images": [], "annotations": []}), "categories"),
    (json.dumps({"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}),
     "image 1 has file_name None"),
])
def test_loader_rejects_malformed_json(tmp_path, content, message):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(content)
    with pytest.raises(AttnlabError, match=message):
        open_split(tmp_path, "train")


IMAGE = {"id": 1, "file_name": "a.png", "width": 8, "height": 8}
ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0}


@pytest.mark.parametrize("images, annotations, message", [
    ([IMAGE], [{**ANN, "category_id": "1"}], "category_id '1' in 'annotations' is not an integer"),
    ([IMAGE], [{**ANN, "category_id": 1.5}], "category_id 1.5 in 'annotations' is not an integer"),
    ([IMAGE], [{**ANN, "category_id": 1.0}], "category_id 1.0 in 'annotations' is not an integer"),
    ([IMAGE], [{**ANN, "image_id": None}], "image_id None"),
    ([IMAGE, {**IMAGE, "file_name": "b.png"}], [ANN], "id 1 appears twice in 'images'"),
    ([IMAGE], [ANN, {**ANN, "bbox": [1, 1, 2, 2]}], "id 1 appears twice in 'annotations'"),
    ([IMAGE], [{**ANN, "bbox": [1, 2]}], "bbox [1, 2]; a COCO box is [x, y, width, height]"),
    ([IMAGE], [{**ANN, "bbox": [1, 2, "3", 4]}], "four finite numbers"),
    ([IMAGE], [{k: v for k, v in ANN.items() if k != "area"}], "has area None; COCOeval needs"),
    ([IMAGE], [{k: v for k, v in ANN.items() if k != "iscrowd"}], "has iscrowd None; COCOeval needs 0"),
    ([{**IMAGE, "file_name": 3}], [ANN], "has file_name 3"),
    ([{**IMAGE, "width": "8"}], [ANN], "has width '8'; COCO sizes are positive integers"),
    ([IMAGE, 3], [ANN], "entry 1 of 'images' is 3, not a JSON object"),
], ids=["string-category", "float-category", "integral-float-category", "null-image-id", "duplicate-image-id",
        "duplicate-annotation-id", "short-bbox", "string-in-bbox", "no-area", "no-iscrowd", "int-file-name",
        "string-width", "non-object"])
def test_loader_rejects_what_cocoeval_cannot_score(tmp_path, images, annotations, message):
    _write_coco(tmp_path, images, annotations, [{"id": 1, "name": "x"}])
    with pytest.raises(AttnlabError, match=re.escape(message)):
        open_split(tmp_path, "train")


def test_loader_rejects_missing_images_and_empty_annotations(tmp_path):
    images = [{"id": 1, "file_name": "gone.png", "width": 8, "height": 8}]
    cats = [{"id": 1, "name": "x"}]
    _write_coco(tmp_path, images, [ANN], cats, make_files=False)
    with pytest.raises(AttnlabError, match="missing.*gone.png"):
        open_split(tmp_path, "train")
    _write_coco(tmp_path, images, [], cats)
    with pytest.raises(AttnlabError, match="no usable"):
        open_split(tmp_path, "train")


def test_geometric_augmentations_move_boxes_with_the_image():
    img = Image.new("RGB", (40, 20))
    t = {"boxes": torch.tensor([[2.0, 4.0, 12.0, 10.0]]), "labels": torch.tensor([5])}
    _, f = hflip(img, t)
    assert f["boxes"][0].tolist() == [28.0, 4.0, 38.0, 10.0]
    im2, r = resize(img, t, 10)
    assert im2.size == (20, 10) and r["boxes"][0].tolist() == [1.0, 2.0, 6.0, 5.0]
    _, c = crop(img, t, top=5, left=8, height=10, width=10)
    assert c["boxes"][0].tolist() == [0.0, 0.0, 4.0, 5.0]
    _, gone = crop(img, t, top=0, left=20, height=10, width=10)
    assert len(gone["boxes"]) == 0 and len(gone["labels"]) == 0


def test_detr_augmentation_keeps_boxes_inside_and_is_seeded(tiny_data):
    tf = make_transforms("detr", True, 32)
    ds = CocoDetection(tiny_data / "train", tiny_data / "annotations" / "instances_train.json", tf)
    first = []
    for i in range(8):
        x, t = ds[i]
        assert ((t["boxes"] >= 0) & (t["boxes"] <= 1)).all()
        assert torch.equal(ds[i][0], x)                 # same (seed, epoch, index): same augmentation
        first.append(x)
    ds.epoch = 1
    assert any(ds[i][0].shape != first[i].shape or not torch.equal(ds[i][0], first[i]) for i in range(8))


def test_collate_pads_and_masks():
    a = (torch.ones(3, 4, 6), {"labels": torch.tensor([0])})
    b = (torch.ones(3, 5, 3), {"labels": torch.tensor([1])})
    images, mask, targets = collate([a, b])
    assert images.shape == (2, 3, 5, 6)
    assert mask[0, 4].all() and not mask[0, :4].any()
    assert mask[1, :, 3:].all() and not mask[1, :, :3].any()
    assert [int(t["labels"][0]) for t in targets] == [0, 1]


def test_digits_are_sklearns_without_importing_it():
    from sklearn.datasets import load_digits as sklearn_digits

    from attnlab.detr.synthetic import load_digits

    images, target = load_digits()
    reference = sklearn_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)


def test_make_data_flags_are_the_generators_options_with_its_defaults(run_cli, tmp_path):
    from attnlab.detr.cli import MAKE_DATA_FLAGS
    from attnlab.detr.synthetic import DEFAULTS

    assert {f.replace("-", "_"): d for f, _, d, _ in MAKE_DATA_FLAGS} == DEFAULTS
    rc, out, _ = run_cli("detr", "make-data", "synthetic-shapes", "-o", tmp_path / "d", "--n-train", "8", "--n-val",
                         "2", "--image-size", "32", "--min-objects", "6", "--max-objects", "6", "--max-overlap",
                         "0.6", "--noise", "0", "--json")
    assert rc == 0 and json.loads(out)["config"]["max_overlap"] == 0.6
    ann = json.loads((tmp_path / "d" / "annotations" / "instances_train.json").read_text())
    assert ann["info"]["generator"]["noise"] == 0.0
    rc, _, err = run_cli("detr", "make-data", "synthetic-shapes", "-o", tmp_path / "e", "--max-overlap", "1.5")
    assert rc == 2 and "0 to 1" in err
