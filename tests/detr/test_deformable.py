import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.detr.deformable import DeformableAttention, token_points, valid_ratios
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


def test_encoder_points_read_every_unpadded_token_at_itself():
    torch.manual_seed(0)
    attn, h, w = _one_point(), 4, 6
    pad = torch.zeros(1, h, w, dtype=torch.bool)
    pad[:, :, 4:] = True                                # right third padded: valid width ratio 4/6
    ratios = valid_ratios(pad)[:, None]
    points = token_points([(h, w)], ratios)
    assert points.shape == (1, h * w, 2) and torch.allclose(points[0, 2 * w + 3], torch.tensor([3.5 / 4, 2.5 / 4]))
    value = torch.randn(1, h * w, 8)
    out = attn(torch.randn(1, h * w, 8), points, value, [(h, w)], pad.flatten(1), ratios)
    expected = attn.output_proj(attn.value_proj(value))
    keep = ~pad.flatten(1)
    assert torch.allclose(out[keep], expected[keep], atol=1e-5)


def test_an_offset_is_in_pixels_of_its_level_in_the_point_form():
    torch.manual_seed(0)
    attn, h, w = _one_point(), 4, 6
    with torch.no_grad():
        attn.sampling_offsets.bias.copy_(torch.tensor([2.0, 1.0]))   # two pixels right, one down
    ratios = torch.ones(1, 1, 2)
    value = torch.randn(1, h * w, 8)
    points = token_points([(h, w)], ratios)
    out = attn(torch.zeros(1, h * w, 8), points, value, [(h, w)], torch.zeros(1, h * w, dtype=torch.bool), ratios)
    expected = attn.output_proj(attn.value_proj(value[:, 2 * w + 3]))       # token (row 1, col 1) reads (2, 3)
    assert torch.allclose(out[:, 1 * w + 1], expected, atol=1e-5)


def test_the_deformable_encoder_trains_its_offsets_and_needs_levels():
    from attnlab.detr.model import Detector, ModelConfig
    from attnlab.detr.train import parameter_groups

    from .conftest import TINY_MODEL

    with pytest.raises(AttnlabError, match="--deformable-encoder needs --deformable-levels"):
        TrainConfig(data="x", model={"deformable_encoder": True})
    cfg = TrainConfig(data="x", lr_linear_proj_mult=0.1, model={**TINY_MODEL, "deformable_levels": 2,
                                                                "deformable_encoder": True})
    torch.manual_seed(0)
    model = Detector(ModelConfig.from_dict({**cfg.model, "num_classes": 3})).train()
    assert all(isinstance(layer.self_attn, DeformableAttention) for layer in model.encoder)
    mask = torch.zeros(2, 32, 40, dtype=torch.bool)
    mask[1, :, 24:] = True
    out = model(torch.randn(2, 3, 32, 40), mask)
    (out["logits"].sum() + out["boxes"].sum()).backward()
    assert all(layer.self_attn.sampling_offsets.weight.grad.abs().sum() > 0 for layer in model.encoder)
    linear_proj = {id(p) for g in parameter_groups(model, cfg) if g["group"] == "linear_proj" for p in g["params"]}
    assert all(id(layer.self_attn.sampling_offsets.weight) in linear_proj for layer in model.encoder)
