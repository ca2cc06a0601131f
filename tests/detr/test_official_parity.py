"""attnlab's DAC options against the official DAC-DETR code: the one-to-many assigner against a port of its
``Stage2Assigner`` (tests/detr/official_port.py), IA-BCE against ``IA_BCE_loss``, look-forward-twice and the
C-decoder's positional query on the model, and ``--official-dac`` on the CLI."""

import json

import pytest
import torch

from attnlab.detr.losses import ia_bce_loss
from attnlab.detr.matching import matching_quality, one_to_many_assign, pad_targets
from attnlab.detr.model import Detector, ModelConfig

from .conftest import TINY_MODEL
from .official_port import OfficialStage2Assigner, official_quality


def crowded_scene(gen, n_obj, n_queries, n_cls=10):
    """``n_obj`` objects and ``n_queries`` predictions, most of them jittered copies of the objects (so
    that many queries pass the 0.4 threshold: the regime where the cap and top-k rule matter)."""
    centres = torch.rand(n_obj, 2, generator=gen) * 0.8 + 0.1
    gt = torch.cat((centres, torch.rand(n_obj, 2, generator=gen) * 0.2 + 0.05), 1)
    near = gt[torch.randint(n_obj, (n_queries,), generator=gen)]
    jitter = torch.randn(n_queries, 4, generator=gen) * torch.tensor([0.02, 0.02, 0.02, 0.02])
    boxes = (near + jitter).clamp(0.01, 0.99)
    far = torch.rand(n_queries, generator=gen) < 0.3
    boxes[far] = torch.rand(int(far.sum()), 4, generator=gen) * 0.5 + 0.05
    logits = torch.randn(n_queries, n_cls, generator=gen) * 2 - 1
    labels = torch.randint(n_cls, (n_obj,), generator=gen)
    return logits, boxes, labels, gt


def pairs(q, g):
    return sorted(zip(q.tolist(), g.tolist(), strict=True))


def test_quality_is_the_official_cost_matrix():
    gen = torch.Generator().manual_seed(1)
    logits, boxes, labels, gt = crowded_scene(gen, 5, 40)
    lab, gtb, valid = pad_targets([{"labels": labels, "boxes": gt}])
    ours = matching_quality(logits[None], boxes[None], lab, gtb, valid)[0]
    assert torch.allclose(ours, official_quality(logits, boxes, labels, gt), atol=1e-6)


@pytest.mark.parametrize("n_obj, n_queries, cap", [(20, 300, 0), (20, 300, 75), (20, 300, 10), (3, 50, 5),
                                                   (1, 30, 75), (12, 900, 75)])
def test_assigner_is_the_official_stage2assigner_with_the_cap_off_and_on(n_obj, n_queries, cap):
    """The same quality, the same per-image seed: the same (query, object) pairs, in a padded batch."""
    gen = torch.Generator().manual_seed(n_obj * 1000 + n_queries + cap)
    scenes = [crowded_scene(gen, n, n_queries) for n in (n_obj, max(1, n_obj // 2), n_obj)]
    qualities = [official_quality(*s) for s in scenes]
    batch = torch.full((len(scenes), n_obj, n_queries), -1.0)
    for i, qm in enumerate(qualities):
        batch[i, :len(qm)] = qm
    seeds = [11, 12, 13]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    b, q, g = one_to_many_assign(batch, 0.4, 6, cap=cap, topk_from="all", generators=gens)
    port = OfficialStage2Assigner(batch_size_per_image=4 * cap if cap else 10 ** 9)
    capped = False
    for i, (qm, seed) in enumerate(zip(qualities, seeds, strict=True)):
        torch.manual_seed(seed)
        pq, pg = port(qm)
        assert pairs(q[b == i], g[b == i]) == pairs(pq, pg), f"image {i}"
        positives = int((port.match(qm)[1] == 1).sum())
        capped |= bool(cap) and positives > cap
    assert capped == (cap in (75, 10, 5) and n_obj >= 3)    # the cases with a cap do draw


def test_a_different_seed_draws_other_positives_and_the_cap_is_honoured():
    gen = torch.Generator().manual_seed(5)
    qm = official_quality(*crowded_scene(gen, 20, 300))[None]
    runs = [one_to_many_assign(qm, cap=30, topk_from="own", generators=[torch.Generator().manual_seed(s)])
            for s in (0, 0, 1)]
    assert pairs(runs[0][1], runs[0][2]) == pairs(runs[1][1], runs[1][2])
    assert pairs(runs[0][1], runs[0][2]) != pairs(runs[2][1], runs[2][2])
    assert all(len(r[0]) <= 30 for r in runs)
    uncapped = one_to_many_assign(qm, topk_from="own")
    assert len(uncapped[0]) > 30


def test_topk_from_all_may_give_a_query_to_two_objects_and_own_never_does():
    quality = torch.tensor([[[0.9, 0.8, 0.1, 0.1], [0.85, 0.1, 0.7, 0.1]]])    # query 0 is both objects' best
    b, q, g = one_to_many_assign(quality, threshold=0.4, topk=2, topk_from="all")
    # positives: q0 -> object 0 (0.9), q1 -> object 0, q2 -> object 1; object 1's forced best, q0, stays with 0
    assert pairs(q, g) == [(0, 0), (0, 1), (1, 0)]
    b, q, g = one_to_many_assign(quality, threshold=0.4, topk=2, topk_from="own")
    assert pairs(q, g) == [(0, 0), (1, 0), (2, 1)]


def official_ia_bce(logits, positive, t, gamma=2.0):
    """``IA_BCE_loss``'s elementwise loss: ``neg_weights = prob ** gamma`` on the graph, t detached."""
    prob = logits.sigmoid()
    pos_w = torch.zeros_like(logits)
    neg_w = prob ** gamma
    pos_w[positive] = t[positive]
    neg_w[positive] = 1 - t[positive]
    return -pos_w * prob.log() - neg_w * (1 - prob).log()


def test_ia_bce_matches_the_official_loss_and_its_gradient():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 7, 5, generator=gen) * 2).requires_grad_()
    positive = torch.rand(4, 7, 5, generator=gen) < 0.2
    t = torch.rand(4, 7, 5, generator=gen) * positive
    ours = ia_bce_loss(x, t, positive)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    ref = official_ia_bce(x, positive, t)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(g_ours, g_ref, atol=1e-5)
    # the negatives' gradient is p^gamma (p - gamma (1 - p) log(1 - p)), 2.4-2.9x the detached p^(gamma + 1)
    for p in (0.1, 0.3, 0.5):
        z = torch.logit(torch.tensor([p], dtype=torch.float64)).requires_grad_()
        (grad,) = torch.autograd.grad(ia_bce_loss(z, torch.zeros(1, dtype=torch.float64),
                                                  torch.zeros(1, dtype=torch.bool)).sum(), z)
        expected = p ** 2 * (p - 2 * (1 - p) * torch.log1p(torch.tensor(-p, dtype=torch.float64)))
        assert float(grad) == pytest.approx(float(expected), rel=1e-9)
        assert 2.3 < float(grad) / p ** 3 < 3.0


def _model(**options):
    torch.manual_seed(0)
    model = Detector(ModelConfig(num_classes=3, **{**TINY_MODEL, "dac": True, **options}))
    with torch.no_grad():                     # refinement heads away from their zero init, so boxes move
        for head in model.bbox_embed:
            head.layers[-1].weight.normal_(0, 0.1)
    return model


def test_look_forward_twice_changes_gradients_not_outputs():
    images, mask = torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool)
    grads, outs = {}, {}
    for twice in (False, True):
        model = _model(look_forward_twice=twice).train()
        out = model(images, mask)
        outs[twice] = out
        # the last layer's box loss: does it reach the previous layer's box head?
        (out["boxes"][-1].sum() + out["c_boxes"][-1].sum()).backward()
        grads[twice] = model.bbox_embed[-2].layers[-1].weight.grad
    for key in ("logits", "boxes", "c_logits", "c_boxes"):
        assert torch.allclose(outs[False][key], outs[True][key])
    assert grads[False] is None or float(grads[False].abs().sum()) == 0.0
    assert float(grads[True].abs().sum()) > 0


@pytest.mark.parametrize("source", ["o", "c"])
def test_c_query_pos_o_gives_the_c_decoder_the_o_decoders_positional_query(source, monkeypatch):
    model = _model(c_query_pos=source).train()
    seen = []
    for layer in model.decoder:
        original = layer.cross_attention_ffn

        def spy(tgt, query_pos, memory, ref, original=original):
            seen.append(query_pos.detach().clone())
            return original(tgt, query_pos, memory, ref)

        monkeypatch.setattr(layer, "cross_attention_ffn", spy)
    model(torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool))
    same = [torch.equal(p[:2], p[2:]) for p in seen]          # the O half and the C half of each layer's batch
    # Layers 0 and 1 agree either way (layer 0's two branches get the same input, so the same boxes); from
    # layer 2 on the C-decoder's own boxes differ from the O-decoder's.
    assert same == [True, True, source == "o"]


def test_official_dac_sets_every_option_and_refuses_a_contradiction(run_cli, tiny_data, tmp_path):
    flags = ["--d-model", "32", "--queries", "8", "--batch-size", "8", "--image-size", "32", "--epochs", "1",
             "--device", "cpu", "--quiet", "--json"]
    rc, out, err = run_cli("detr", "train", "--data", tiny_data, "--official-dac", *flags, "-o", tmp_path / "run")
    assert rc == 0, err
    train = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert {k: train["model"][k] for k in ("dac", "look_forward_twice", "c_query_pos")} == \
        {"dac": True, "look_forward_twice": True, "c_query_pos": "o"}
    assert {k: train["loss"][k] for k in ("cls_loss", "o2m_box_source", "o2m_topk_from", "o2m_cap")} == \
        {"cls_loss": "ia_bce", "o2m_box_source": "o", "o2m_topk_from": "all", "o2m_cap": 75}
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    for flag in ("--look-forward-twice", "--c-query-pos o", "--o2m-topk-from all", "--o2m-cap 75", "--dac"):
        assert flag in record["command"]
    rc, out, err = run_cli("detr", "train", "--data", tiny_data, "--official-dac", "--cls-loss", "focal", *flags,
                           "-o", tmp_path / "run2")
    assert rc == 2 and "--official-dac sets --cls-loss ia_bce" in err and not (tmp_path / "run2").exists()
    # the same value as the switch's is no contradiction
    rc, _, err = run_cli("detr", "train", "--data", tiny_data, "--official-dac", "--o2m-cap", "75", *flags,
                         "-o", tmp_path / "run3")
    assert rc == 0, err


def test_each_option_trains_alone(tiny_data, tmp_path):
    from attnlab.detr.train import TrainConfig, train

    for name, model, loss in (("cap", {}, {"o2m_cap": 3}), ("all", {}, {"o2m_topk_from": "all"}),
                              ("pos", {"c_query_pos": "o"}, {}), ("lft", {"look_forward_twice": True}, {})):
        cfg = TrainConfig(data=str(tiny_data), image_size=32, epochs=1, batch_size=8, device="cpu", eval_every=1,
                          model={**TINY_MODEL, "dac": True, **model}, loss=loss)
        state = train(cfg, tmp_path / name, progress=False, quiet=True)
        assert state["history"][-1]["AP"] is not None and state["step"] == 3
