import pytest
import torch

from attnlab.detr.losses import LossConfig, detr_loss
from attnlab.detr.model import CROSS_ATTENTION, Detector, ModelConfig

from .conftest import TINY_MODEL

TARGETS = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
           {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


def _model(dac: bool, seed: int = 0, **kw) -> Detector:
    torch.manual_seed(seed)
    return Detector(ModelConfig.from_dict({**TINY_MODEL, "num_classes": 3, "dac": dac, **kw}))


def _inputs():
    torch.manual_seed(1)
    mask = torch.zeros(2, 32, 40, dtype=torch.bool)
    mask[1, :, 32:] = True                             # second image is padded on the right
    return torch.randn(2, 3, 32, 40), mask


#: deformable_levels that select each cross-attention variant
LEVELS = {"dense": 0, "deformable": 2}
EACH_CROSS_ATTENTION = pytest.mark.parametrize("levels", [LEVELS[v] for v in CROSS_ATTENTION],
                                               ids=list(CROSS_ATTENTION))


@pytest.mark.parametrize("variant", list(CROSS_ATTENTION))
def test_deformable_levels_select_the_cross_attention(variant):
    model = _model(False, deformable_levels=LEVELS[variant])
    assert model.config.cross_attention == variant
    assert all(type(layer.cross_attn) is CROSS_ATTENTION[variant] for layer in model.decoder)


@EACH_CROSS_ATTENTION
def test_dac_adds_no_parameters_and_keeps_the_state_dict(levels):
    base, dac = _model(False, deformable_levels=levels), _model(True, deformable_levels=levels)
    assert sum(p.numel() for p in base.parameters()) == sum(p.numel() for p in dac.parameters())
    assert {k: v.shape for k, v in base.state_dict().items()} == {k: v.shape for k, v in dac.state_dict().items()}


@EACH_CROSS_ATTENTION
def test_eval_outputs_are_bit_identical_with_dac_on_or_off(levels):
    dac = _model(True, deformable_levels=levels)
    base = _model(False, seed=123, deformable_levels=levels)
    base.load_state_dict(dac.state_dict())
    x, mask = _inputs()
    with torch.no_grad():
        a, b = dac.eval()(x, mask), base.eval()(x, mask)
    assert set(a) == {"logits", "boxes"}               # no C-decoder at inference
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["boxes"], b["boxes"])


def test_training_outputs_shapes_and_c_decoder_only_in_training():
    m = _model(True).train()
    x, mask = _inputs()
    out = m(x, mask)
    assert out["logits"].shape == out["c_logits"].shape == (3, 2, 8, 3)
    assert out["boxes"].shape == out["c_boxes"].shape == (3, 2, 8, 4)
    assert ((out["boxes"] > 0) & (out["boxes"] < 1)).all()


def _c_loss_grads(share_first: bool, levels: int = 0) -> list[float]:
    m = _model(True, c_share_first_self_attn=share_first, deformable_levels=levels).train()
    x, mask = _inputs()
    out = m(x, mask)
    c_only = {"logits": out["logits"][:0], "boxes": out["boxes"][:0], "c_logits": out["c_logits"],
              "c_boxes": out["c_boxes"]}
    loss, _ = detr_loss(c_only, TARGETS, LossConfig())
    loss.backward()
    assert all(any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.cross_attn.parameters())
               for layer in m.decoder)
    assert all(head.weight.grad.abs().sum() > 0 for head in m.class_embed)
    grads = [layer.self_attn.in_proj_weight.grad for layer in m.decoder]
    return [0.0 if g is None else float(g.abs().sum()) for g in grads]


@EACH_CROSS_ATTENTION
def test_c_decoder_loss_reaches_layer0_self_attention_only(levels):
    grads = _c_loss_grads(share_first=True, levels=levels)
    assert grads[0] > 0
    assert grads[1:] == [0.0, 0.0]


def test_without_shared_first_self_attention_no_self_attention_gets_c_gradient():
    assert _c_loss_grads(share_first=False) == [0.0, 0.0, 0.0]


def test_o_decoder_loss_reaches_every_self_attention():
    m = _model(False).train()
    x, mask = _inputs()
    loss, _ = detr_loss(m(x, mask), TARGETS, LossConfig())
    loss.backward()
    assert all(layer.self_attn.in_proj_weight.grad.abs().sum() > 0 for layer in m.decoder)
