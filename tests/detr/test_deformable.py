import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.detr.deformable import DeformableAttention, valid_ratios
from attnlab.detr.train import TrainConfig


def test_valid_ratios_are_the_unpadded_share_of_width_and_height():
    pad = torch.zeros(2, 4, 8, dtype=torch.bool)
    pad[1, :, 6:] = True
    pad[1, 3:, :] = True
    assert torch.equal(valid_ratios(pad), torch.tensor([[1.0, 1.0], [0.75, 0.75]]))


def _one_point(d: int = 8) -> DeformableAttention:
    attn = DeformableAttention(d, heads=1, levels=1, points=1)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()             # sample exactly at the reference box centre
    return attn


def test_one_point_without_offset_reads_the_value_at_the_box_centre():
    torch.manual_seed(0)
    attn, h, w = _one_point(), 4, 6
    value = torch.randn(1, h * w, 8)
    # the centre of pixel (row 2, column 3) in normalised coordinates (align_corners=False)
    boxes = torch.tensor([[[(3 + 0.5) / w, (2 + 0.5) / h, 0.3, 0.3]]])
    pad, ratios = torch.zeros(1, h * w, dtype=torch.bool), torch.ones(1, 1, 2)
    out = attn(torch.randn(1, 1, 8), boxes, value, [(h, w)], pad, ratios)
    expected = attn.output_proj(attn.value_proj(value[:, 2 * w + 3]))
    assert torch.allclose(out[:, 0], expected, atol=1e-5)       # bilinear weights are 1 up to float rounding


def test_padded_tokens_do_not_reach_the_output_and_offsets_get_gradients():
    torch.manual_seed(0)
    attn, h, w = DeformableAttention(8, heads=2, levels=2, points=3), 4, 6
    shapes = [(h, w), (h // 2, w // 2)]
    pad = torch.zeros(1, h, w, dtype=torch.bool)
    pad[:, :, 4:] = True                                # right third of the image is padding
    pad2 = pad[:, ::2, ::2]
    flat_pad = torch.cat((pad.flatten(1), pad2.flatten(1)), 1)
    value = torch.randn(1, flat_pad.shape[1], 8)
    query, boxes = torch.randn(1, 5, 8, requires_grad=True), torch.rand(1, 5, 4) * 0.5 + 0.2
    ratios = torch.stack((valid_ratios(pad), valid_ratios(pad2)), 1)
    out = attn(query, boxes, value, shapes, flat_pad, ratios)
    changed = value.clone()
    changed[flat_pad] += 100.0
    assert torch.equal(out, attn(query, boxes, changed, shapes, flat_pad, ratios))
    out.sum().backward()
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0 and attn.attention_weights.weight.grad.abs().sum() > 0


def test_more_levels_than_backbone_stages_is_a_clear_error():
    with pytest.raises(AttnlabError, match="deformable_levels must be 0"):
        TrainConfig(data="x", model={"deformable_levels": 4})
