"""DAC around transformers' Deformable DETR (attnlab.detr.hf), on a tiny config: a 4-stage ResNet with
16-64 channels, d_model 32, 2 decoder layers, 5 queries, 64 px images."""

import copy
import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, ResNetConfig
from transformers.models.deformable_detr import modeling_deformable_detr as hf_detr

from attnlab.core.errors import AttnlabError
from attnlab.detr.hf import DacDeformableDetr

TARGETS = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.25]])},
           {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.45, 0.4, 0.3]])}]


def tiny_model(two_stage: bool = False, with_box_refine: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], layer_type="basic",
                            out_features=["stage2", "stage3", "stage4"])
    cfg = DeformableDetrConfig(backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False,
                               d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=5,
                               num_labels=3, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2,
                               with_box_refine=with_box_refine, two_stage=two_stage, two_stage_num_proposals=5,
                               dropout=0.0)
    return DeformableDetrForObjectDetection(cfg)


def images(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_wrapper_adds_no_parameters():
    model = tiny_model()
    names = {n for n, _ in model.named_parameters()}
    wrapped = DacDeformableDetr(model)
    assert {n for n, _ in wrapped.named_parameters()} == {f"model.{n}" for n in names}
    assert sum(p.numel() for p in wrapped.parameters()) == sum(p.numel() for p in model.parameters())
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("two_stage", [False, True])
def test_eval_output_and_checkpoint_are_the_unwrapped_models(two_stage, tmp_path):
    wrapped = DacDeformableDetr(tiny_model(two_stage))
    opt = torch.optim.AdamW(wrapped.parameters(), lr=1e-3)
    wrapped.train()
    loss, _ = wrapped.loss(wrapped(images()), TARGETS)                # one DAC step, so the weights are trained ones
    loss.backward()
    opt.step()
    plain = tiny_model(two_stage, seed=5)
    plain.load_state_dict(wrapped.model.state_dict())
    wrapped.eval()
    plain.eval()
    with torch.no_grad():
        ours, theirs = wrapped(images(2)), plain(images(2))
    assert type(ours) is type(theirs)
    assert torch.equal(ours.logits, theirs.logits) and torch.equal(ours.pred_boxes, theirs.pred_boxes)
    wrapped.save_pretrained(tmp_path / "wrapped")
    plain.save_pretrained(tmp_path / "plain")
    a, b = load_file(tmp_path / "wrapped" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reloaded = DeformableDetrForObjectDetection.from_pretrained(tmp_path / "wrapped").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(images(2)).logits, theirs.logits)


@pytest.mark.parametrize("two_stage", [False, True])
def test_training_outputs_follow_the_models_own_heads(two_stage):
    model = tiny_model(two_stage)
    wrapped = DacDeformableDetr(model).train()
    out = wrapped(images())
    own = model(images())                                              # dropout 0: training forward is deterministic
    assert out["logits"].shape == out["c_logits"].shape == (2, 2, 5, 3)
    assert torch.equal(out["logits"][-1], own.logits) and torch.equal(out["boxes"][-1], own.pred_boxes)
    # C layer 0 starts from the O-decoder's query after layer 0's self-attention and the same references:
    # the same result; from layer 1 on it skips self-attention, so it differs.
    assert torch.equal(out["c_logits"][0], out["logits"][0]) and torch.equal(out["c_boxes"][0], out["boxes"][0])
    assert not torch.allclose(out["c_logits"][1], out["logits"][1])
    assert "c_logits" not in DacDeformableDetr(model, dac=False).train()(images())


def count_calls(model, part):
    counts = [0] * len(model.model.decoder.layers)
    handles = [getattr(layer, part).register_forward_hook(lambda *a, i=i: counts.__setitem__(i, counts[i] + 1))
               for i, layer in enumerate(model.model.decoder.layers)]
    return counts, handles


def test_c_pass_skips_self_attention():
    model = tiny_model()
    wrapped = DacDeformableDetr(model)
    self_calls, h1 = count_calls(model, "self_attn")
    cross_calls, h2 = count_calls(model, "encoder_attn")
    wrapped.train()(images())
    assert self_calls == [1, 1] and cross_calls == [2, 2]             # O-pass: both; C-pass: cross-attention only
    wrapped.eval()(images())
    assert self_calls == [2, 2] and cross_calls == [3, 3]             # eval: the O-pass alone
    for h in h1 + h2:
        h.remove()
    # the C-loss alone trains layer 0's self-attention (shared) and no later one
    out = wrapped.train()(images())
    c_only = {"logits": out["logits"][:0], "boxes": out["boxes"][:0], "c_logits": out["c_logits"],
              "c_boxes": out["c_boxes"]}
    wrapped.zero_grad()
    wrapped.loss(c_only, TARGETS)[0].backward()
    grads = [layer.self_attn.q_proj.weight.grad for layer in model.model.decoder.layers]
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None or grads[1].abs().sum() == 0
    assert model.model.decoder.layers[1].encoder_attn.output_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("two_stage", [False, True])
def test_loss_finite_and_decreasing_on_a_tiny_overfit(two_stage):
    wrapped = DacDeformableDetr(tiny_model(two_stage)).train()
    opt = torch.optim.AdamW(wrapped.parameters(), lr=2e-3)
    x, losses = images(), []
    for _ in range(30):
        loss, parts = wrapped.loss(wrapped(x), TARGETS)
        assert torch.isfinite(loss) and parts["c1_positives_per_object"] > 0
        assert ("enc_cls" in parts) == two_stage                      # two-stage trains the encoder's proposals
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_refuses_what_it_cannot_replay(monkeypatch):
    with pytest.raises(AttnlabError, match="with_box_refine=True"):
        DacDeformableDetr(tiny_model(with_box_refine=False))
    with pytest.raises(AttnlabError, match="DeformableDetrForObjectDetection"):
        DacDeformableDetr(torch.nn.Linear(2, 2))
    model = tiny_model()
    broken = copy.deepcopy(model)
    broken.model.decoder.layers[1].mlp_renamed = broken.model.decoder.layers[1].mlp
    del broken.model.decoder.layers[1].mlp
    with pytest.raises(AttnlabError, match="no mlp") as err:
        DacDeformableDetr(broken)
    assert "\n" not in str(err.value) and "transformers" in str(err.value)
    original = hf_detr.DeformableDetrDecoderLayer.forward

    def pre_norm(self, hidden_states, *args, **kwargs):                # a decoder laid out otherwise (pre-norm)
        return original(self, self.self_attn_layer_norm(hidden_states), *args, **kwargs)

    monkeypatch.setattr(hf_detr.DeformableDetrDecoderLayer, "forward", pre_norm)
    with pytest.raises(AttnlabError, match="replay") as err:
        DacDeformableDetr(model)
    assert "\n" not in str(err.value)


# --- attnlab detr train --arch hf-deformable --------------------------------------------------------------

HF_MODEL = {"d_model": 32, "n_heads": 2, "ffn_dim": 32, "num_queries": 8, "dec_layers": 2,
            "backbone_channels": [16, 16, 32], "deformable_points": 2, "dac": True}


def _hf_cfg(data, **kw):
    from attnlab.detr.train import TrainConfig

    return TrainConfig(**{"data": str(data), "image_size": 32, "epochs": 2, "batch_size": 8, "device": "cpu",
                          "arch": "hf-deformable", "model": HF_MODEL, **kw})


def test_hf_training_resumes_and_evaluates_as_recorded(tiny_data, tmp_path, monkeypatch):
    import importlib

    from attnlab.detr.train import CHECKPOINT, evaluate_run, read_checkpoint, train

    full = train(_hf_cfg(tiny_data, two_stage=True), tmp_path / "full", progress=False, quiet=True)
    module = importlib.import_module("attnlab.detr.train")

    def crash(path, entry):
        raise KeyboardInterrupt                                          # dies right after the epoch-1 checkpoint

    monkeypatch.setattr(module, "append_jsonl", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_hf_cfg(tiny_data, two_stage=True), tmp_path / "resumed", progress=False, quiet=True)
    monkeypatch.undo()
    resumed = train(_hf_cfg(tiny_data, two_stage=True), tmp_path / "resumed", progress=False, quiet=True)
    a, b = read_checkpoint(tmp_path / "full" / CHECKPOINT)[0], read_checkpoint(tmp_path / "resumed" / CHECKPOINT)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in full["history"])
    again = evaluate_run(tmp_path / "full")
    assert again.metrics["AP"] == full["history"][-1]["AP"]


def test_hf_training_from_a_pretrained_folder(tiny_data, tmp_path, run_cli):
    from attnlab.detr.hf import tiny_config

    pretrained = DeformableDetrForObjectDetection(tiny_config(3, HF_MODEL, False))   # another class count
    pretrained.save_pretrained(tmp_path / "pre")
    flags = ["detr", "train", "--data", tiny_data, "--arch", "hf-deformable", "--from-pretrained", tmp_path / "pre",
             "--dac", "--batch-size", "8", "--image-size", "32", "--epochs", "1", "--threads", "1", "--json"]
    rc, out, err = run_cli(*flags, "-o", tmp_path / "run")
    assert rc == 0, err
    assert json.loads(out)["parameters"] == sum(p.numel() for p in pretrained.parameters()) + 7 * 32 + 7  # head 3->10
    rc, _, err = run_cli(*flags, "--two-stage", "-o", tmp_path / "run2")
    assert rc == 2 and "is not two-stage; drop --two-stage" in err
    rc, _, err = run_cli(*flags[:6], "--from-pretrained", tmp_path, "-o", tmp_path / "run3")
    assert rc == 2 and "not a save_pretrained folder" in err
    config = json.loads((tmp_path / "pre" / "config.json").read_text())
    (tmp_path / "timm").mkdir()                                      # SenseTime's checkpoints: a timm backbone
    (tmp_path / "timm" / "config.json").write_text(json.dumps({**config, "backbone_config": None,
                                                               "use_timm_backbone": True, "backbone": "resnet18"}))
    rc, _, err = run_cli(*flags[:6], "--from-pretrained", tmp_path / "timm", "-o", tmp_path / "run4")
    assert rc == 2 and "transformers cannot load it" in err and err.count("\n") == 1, err      # no weights file
    assert not (tmp_path / "run4").exists()                          # refused before the run folder is made
    (tmp_path / "timm" / "model.safetensors").write_bytes((tmp_path / "pre" / "model.safetensors").read_bytes())
    rc, _, err = run_cli(*flags[:6], "--from-pretrained", tmp_path / "timm", "-o", tmp_path / "run4")
    if importlib.util.find_spec("timm") is None:
        assert rc == 2 and "pip install timm" in err and err.count("\n") == 1, err


def test_hf_arch_refuses_what_it_does_not_implement(tiny_data, tmp_path, run_cli):
    base = ["detr", "train", "--data", tiny_data, "--epochs", "1", "-o", tmp_path / "run"]
    for extra, fragment in ((["--arch", "hf-deformable", "--look-forward-twice"], "does not implement look_forward"),
                            (["--two-stage"], "options of --arch hf-deformable"),
                            (["--arch", "hf-deformable", "--d-model", "48"], "multiple of 32")):
        rc, _, err = run_cli(*base, *extra)
        assert rc == 2 and fragment in err and err.count("\n") == 1, err


@pytest.mark.slow                                                       # ~40 s: two torchrun processes
def test_hf_two_gloo_processes_train_the_one_process_run(tiny_data, tmp_path, run_cli):
    from attnlab.detr.train import CHECKPOINT, read_checkpoint

    from .test_ddp import FLAGS, _torchrun

    # d_model 64: GroupNorm(32) over 2 channels per group; with 1 (d_model 32) the input projections' gradient
    # is identically zero (the norm removes it) and AdamW turns its rounding noise into steps
    flags = ["--data", tiny_data, "--arch", "hf-deformable", *FLAGS, "--d-model", "64"]
    two = _torchrun("detr", "train", *flags, "-o", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    rc, _, err = run_cli("detr", "train", *flags, "-o", tmp_path / "one")
    assert rc == 0, err
    a, state_a, _ = read_checkpoint(tmp_path / "one" / CHECKPOINT)
    b, state_b, _ = read_checkpoint(tmp_path / "two" / CHECKPOINT)
    assert a.keys() == b.keys()
    for k in (k for k in a if k.startswith("model.")):
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    for ha, hb in zip(state_a["history"], state_b["history"], strict=True):
        assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-4)
