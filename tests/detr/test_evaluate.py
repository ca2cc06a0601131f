import pytest
import torch

from attnlab.detr.data import open_split
from attnlab.detr.evaluate import coco_ap, coco_detections, postprocess, queries_per_object


def test_pycocotools_gives_ap_one_on_perfect_predictions(tiny_data):
    ds = open_split(tiny_data, "val")
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in ds.coco.loadAnns(ds.coco.getAnnIds())]
    ap = coco_ap(ds.coco, dets)
    assert ap["AP"] == ap["AP50"] == ap["AP75"] == 1.0
    wrong = [{**d, "category_id": ds.cat_ids[(ds.cat_ids.index(d["category_id"]) + 1) % 10]} for d in dets]
    assert coco_ap(ds.coco, wrong)["AP"] == 0.0
    assert coco_ap(ds.coco, [])["AP"] == 0.0


def test_postprocess_round_trips_model_boxes_to_coco_pixels():
    logits = torch.full((1, 2, 3), -10.0)
    logits[0, 1, 2] = 10.0
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.1], [0.25, 0.5, 0.5, 0.2]]])
    preds = postprocess(logits, boxes, torch.tensor([[20, 40]]), top_k=1)      # h=20, w=40
    assert preds[0]["labels"].tolist() == [2]
    assert preds[0]["boxes"][0].tolist() == pytest.approx([0.0, 8.0, 20.0, 12.0])
    det = coco_detections(preds, [7], [1, 5, 9])
    assert det[0]["category_id"] == 9 and det[0]["bbox"] == pytest.approx([0.0, 8.0, 20.0, 4.0])


def test_queries_per_object_counts_queries_above_each_threshold():
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    logits = torch.full((1, 4, 2), -20.0)
    logits[0, 0, 1] = 20.0            # query 0: p=1, IoU 1 -> quality 1.0
    counts, n = queries_per_object(logits, boxes, [{"labels": torch.tensor([1]), "boxes": gt}])
    # p ~ 0 for the others: query 1 IoU 0.19/0.21 -> quality 0.633; query 2 IoU 0.18/0.22 -> 0.573; query 3: 0.
    # Every quality is at least 0.02 from a threshold, so float rounding cannot move a count.
    assert n == 1 and counts.tolist() == [2.0, 1.0, 1.0]
