import pytest
import torch

from attnlab.detr.box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou, paired_giou, paired_iou, xyxy_to_cxcywh


def test_iou_and_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    iou, union = box_iou(a, b)
    # overlap 1, union 4 + 4 - 1 = 7; identical; disjoint
    assert iou[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    assert union[0].tolist() == pytest.approx([7.0, 4.0, 5.0])
    giou = generalized_box_iou(a, b)
    # enclosing boxes: 3x3 = 9 -> 1/7 - (9 - 7)/9; identical -> 1; 4x2 = 8 -> 0 - (8 - 5)/8
    assert giou[0].tolist() == pytest.approx([1 / 7 - 2 / 9, 1.0, -3 / 8])
    assert paired_giou(a.expand(3, 4), b).tolist() == pytest.approx(giou[0].tolist())
    assert paired_iou(a.expand(3, 4), b).tolist() == pytest.approx(iou[0].tolist())


def test_giou_far_apart_tends_to_minus_one():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[99.0, 99.0, 100.0, 100.0]])
    assert generalized_box_iou(a, b).item() == pytest.approx(-1.0, abs=1e-3)


def test_box_format_round_trip():
    b = torch.tensor([[0.5, 0.4, 0.2, 0.6], [0.1, 0.9, 0.05, 0.1]])
    assert torch.allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(b)), b)
    assert cxcywh_to_xyxy(b)[0].tolist() == pytest.approx([0.4, 0.1, 0.6, 0.7])
