import math

import pytest
import torch

from attnlab.detr.losses import LossConfig, detr_loss, ia_bce_loss, rank_within_groups, sigmoid_focal_loss


def test_focal_loss_hand_value():
    logits, target = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected = [0.25 * math.log(2) * 0.5 ** 2, 0.75 * -math.log(1 - p) * p ** 2]
    assert sigmoid_focal_loss(logits, target).tolist() == pytest.approx(expected, rel=1e-5)


def test_ia_bce_hand_value():
    logits = torch.tensor([0.0, 0.0])
    loss = ia_bce_loss(logits, torch.tensor([0.6, 0.0]), torch.tensor([True, False]))
    assert loss.tolist() == pytest.approx([math.log(2), 0.25 * math.log(2)], rel=1e-5)


def test_rank_within_groups():
    groups = torch.tensor([1, 0, 1, 1, 0])
    scores = torch.tensor([0.2, 0.9, 0.8, 0.5, 0.1])
    assert rank_within_groups(groups, scores).tolist() == [2, 0, 0, 1, 1]


def _outputs():
    torch.manual_seed(0)
    lg = torch.randn(2, 2, 6, 3)
    bx = torch.rand(2, 2, 6, 4) * 0.5 + 0.25
    return {"logits": lg, "boxes": bx, "c_logits": lg.clone(), "c_boxes": bx.clone()}


TARGETS = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.4, 0.4, 0.3, 0.3], [0.6, 0.5, 0.3, 0.4]])},
           {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]


def test_c_decoder_loss_is_normalised_by_three_times_the_objects():
    out = _outputs()
    _, parts3 = detr_loss(out, TARGETS, LossConfig())
    _, parts1 = detr_loss(out, TARGETS, LossConfig(c_loss_norm=1.0))
    for k in ("cls", "l1", "giou"):
        assert parts1[f"c0_{k}"] == pytest.approx(3 * parts3[f"c0_{k}"], rel=1e-5)
        assert parts1[f"o0_{k}"] == pytest.approx(parts3[f"o0_{k}"])


@pytest.mark.parametrize("cls_loss", ["focal", "ia_bce"])
@pytest.mark.parametrize("source", ["c", "o"])
def test_loss_options_give_finite_losses_with_gradients(cls_loss, source):
    out = {k: v.requires_grad_() for k, v in _outputs().items()}
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    loss, parts = detr_loss(out, TARGETS[:1] + [empty],
                            LossConfig(cls_loss=cls_loss, o2m_box_source=source))
    loss.backward()
    assert torch.isfinite(loss) and out["c_logits"].grad.abs().sum() > 0
    assert 1.0 <= parts["c0_positives_per_object"] <= 6.0
