import json

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
            Image.new("RGB", (im["width"], im["height"]), (30, 30, 30)).save(root / "train" / im["file_name"])
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def test_loader_remaps_categories_ignores_crowd_and_counts_bad_boxes(tmp_path):
    images = [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}]
    cats = [{"id": 90, "name": "late"}, {"id": 3, "name": "early"}]
    anns = [{"id": 1, "image_id": 7, "category_id": 90, "bbox": [30, 10, 20, 10]},      # clipped to x 30..40
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [50, 50, 5, 5]},         # outside: skipped
            {"id": 4, "image_id": 7, "category_id": 3, "bbox": [1, 2, 0, 3]},           # empty: skipped
            {"id": 5, "image_id": 7, "category_id": 3, "bbox": [1, 2]}]                 # malformed: skipped
    _write_coco(tmp_path, images, anns, cats)
    with pytest.warns(UserWarning, match="skipped 3"):
        ds = open_split(tmp_path, "train")
    assert ds.names == ["early", "late"] and ds.cat_to_label == {3: 0, 90: 1}
    x, t = ds[0]
    assert x.shape == (3, 30, 40)
    assert t["labels"].tolist() == [1]                                                   # crowd box not trained on
    assert t["boxes"][0].tolist() == pytest.approx([35 / 40, 15 / 30, 10 / 40, 10 / 30])
    assert len(ds.coco.getAnnIds()) == 2                                     # COCOeval still sees the crowd


@pytest.mark.parametrize("content, message", [
    ("{not json", "malformed COCO JSON"),
    (json.dumps({"images": [], "annotations": []}), "categories"),
    (json.dumps({"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}),
     "malformed COCO entry"),
])
def test_loader_rejects_malformed_json(tmp_path, content, message):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(content)
    with pytest.raises(AttnlabError, match=message):
        open_split(tmp_path, "train")


IMAGE = {"id": 1, "file_name": "a.png", "width": 8, "height": 8}
ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}


@pytest.mark.parametrize("images, annotations, message", [
    ([IMAGE], [{**ANN, "category_id": "1"}], "category_id '1' in 'annotations' is not an integer"),
    ([IMAGE], [{**ANN, "category_id": 1.5}], "category_id 1.5 in 'annotations' is not an integer"),
    ([IMAGE], [{**ANN, "image_id": None}], "image_id None"),
    ([IMAGE, {**IMAGE, "file_name": "b.png"}], [ANN], "id 1 appears twice in 'images'"),
], ids=["string-category", "float-category", "null-image-id", "duplicate-image-id"])
def test_loader_rejects_ids_that_are_not_unique_integers(tmp_path, images, annotations, message):
    _write_coco(tmp_path, images, annotations, [{"id": 1, "name": "x"}])
    with pytest.raises(AttnlabError, match=message):
        open_split(tmp_path, "train")


def test_loader_rejects_missing_images_and_empty_annotations(tmp_path):
    images = [{"id": 1, "file_name": "gone.png", "width": 8, "height": 8}]
    cats = [{"id": 1, "name": "x"}]
    _write_coco(tmp_path, images, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}], cats,
                make_files=False)
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
