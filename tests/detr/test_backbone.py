"""The native detector's backbones (registry, frozen BatchNorm, strides, user weights), --heads/--ffn-dim,
the optimizer's parameter groups and the lr-drop schedule, and resume with groups (issue 15, item 4)."""

import importlib
import json

import pytest
import torch

from attnlab.core.errors import AttnlabError
from attnlab.detr.backbone import FrozenBatchNorm2d, load_backbone_weights
from attnlab.detr.model import Detector, ModelConfig
from attnlab.detr.train import CHECKPOINT, TrainConfig, load_run, parameter_groups, read_checkpoint, train
from attnlab.detr.variants import BACKBONES

from .conftest import TINY_MODEL

#: A bottleneck ResNet small enough for seconds-long tests (ResNet-50's layout, 1 block per stage).
TINY_RESNET = {"backbone": "resnet50", "resnet_stem": 8, "resnet_widths": [16, 32, 64, 128],
               "resnet_depths": [1, 1, 1, 1]}


def _detector(seed: int = 0, **model) -> Detector:
    torch.manual_seed(seed)
    return Detector(ModelConfig.from_dict({**TINY_MODEL, "num_classes": 3, **model}))


def _batch(h: int = 64, w: int = 64):
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(2, h, w, dtype=torch.bool)
    mask[1, :, w // 2:] = True
    return torch.randn(2, 3, h, w, generator=g), mask


#: The default model (seed 0) as the code before the backbone registry built it: parameter count, the
#: float64 sum of its parameters, and the sums of its eval logits and boxes on a fixed batch.
BEFORE = {0: (302666, 819.7436429268741, -4413.732916593552, 144.0956574305892),
          2: (300714, 718.4304870098338, -4424.942130565643, 124.98313093744218)}


@pytest.mark.parametrize("levels", sorted(BEFORE))
def test_the_default_model_is_the_one_before_the_registry(levels):
    torch.manual_seed(0)
    model = Detector(ModelConfig(num_classes=10, deformable_levels=levels)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 48, 56, generator=g)
    mask = torch.zeros(2, 48, 56, dtype=torch.bool)
    mask[1, :, 40:] = True
    with torch.no_grad():
        out = model(x, mask)
    n, psum, logits, boxes = BEFORE[levels]
    assert sum(p.numel() for p in model.parameters()) == n
    # rel 1e-6: some inits go through LAPACK (orthogonal), whose kernels round differently on other CPUs (1.3e-8
    # seen with OpenBLAS's Prescott kernels); another model would differ at the 1e-2 level
    assert sum(float(p.detach().double().sum()) for p in model.parameters()) == pytest.approx(psum, rel=1e-6)
    assert float(out["logits"].double().sum()) == pytest.approx(logits, rel=1e-4)
    assert float(out["boxes"].double().sum()) == pytest.approx(boxes, rel=1e-4)


#: Options that make each registered backbone small, and the strides of its levels for 1, 2, ... levels: the
#: CNN's last stages; the ResNet's last of 8/16/32, then all three and the stride-64 conv (Deformable DETR).
SMALL = {"cnn": ({}, [[8], [4, 8], [2, 4, 8]]),
         "resnet50": (TINY_RESNET, [[32], [16, 32], [8, 16, 32], [8, 16, 32, 64]])}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_registered_backbone_gives_its_levels_at_their_strides(name):
    options, each = SMALL[name]
    x, mask = _batch()
    for levels, strides in enumerate(each, 1):
        model = _detector(**options, deformable_levels=levels)
        assert type(model.backbone).__name__ == BACKBONES[name].split(":")[1]
        feats = model.backbone(x, mask)
        assert model.backbone.strides == strides
        assert [f.shape[-2:] for f, _ in feats] == [(64 // s, 64 // s) for s in model.backbone.strides]
        assert all(f.shape[:2] == (2, 32) and m.shape == (2, *f.shape[-2:]) for f, m in feats)
        assert all(m[1, :, -1].all() and not m[0].any() for _, m in feats if m.shape[-1] > 1)  # right half padded
    out = model.train()(x, mask)
    assert out["boxes"].shape == (3, 2, 8, 4) and torch.isfinite(out["logits"]).all()


def test_frozen_batch_norm_stays_fixed_in_train_mode():
    model = _detector(**TINY_RESNET, deformable_levels=4).train()
    body = model.backbone.body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and not any(p for m in frozen for p in m.parameters())      # buffers only: never optimised
    with torch.no_grad():
        for m in frozen:                                      # non-trivial statistics, so a BN update would show
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    x, mask = _batch()
    opt = torch.optim.AdamW(parameter_groups(model, TrainConfig(data="x", model=TINY_RESNET)), lr=1e-2)
    for _ in range(2):
        out = model(x, mask)
        (out["logits"].sum() + out["boxes"].sum()).backward()
        opt.step()
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "normalization" in k)
    # the stem and stage 1 do not train (DETR's backbone.py); stages 2-4 do
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("embedder.", "encoder.stages.0.")))
    assert not torch.equal(before["encoder.stages.3.layers.0.layer.0.convolution.weight"],
                           after["encoder.stages.3.layers.0.layer.0.convolution.weight"])
    with torch.no_grad():                                     # train and eval mode compute the same features
        a = model.backbone.train()(x, mask)[0][0]
        b = model.backbone.eval()(x, mask)[0][0]
    assert torch.equal(a, b)


def _resnet_state_file(tmp_path, seed: int = 5):
    """A transformers ResNetModel of the tiny sizes, saved as a user would (with num_batches_tracked)."""
    from safetensors.torch import save_file
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    hf = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                  layer_type="bottleneck"))
    with torch.no_grad():
        for m in hf.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, str(tmp_path / "r.safetensors"))
    return tmp_path / "r.safetensors", state


def test_backbone_weights_load_every_key(tmp_path):
    path, state = _resnet_state_file(tmp_path)
    model = _detector(**TINY_RESNET)
    load_backbone_weights(model.backbone, path)
    own = model.backbone.body.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert any("num_batches_tracked" in k for k in state) and not any("num_batches_tracked" in k for k in own)


def test_bad_backbone_weights_are_one_line(tmp_path):
    from safetensors.torch import save_file

    path, state = _resnet_state_file(tmp_path)
    model = _detector(**TINY_RESNET)
    bad = {**{k: v for k, v in state.items() if k != "embedder.embedder.convolution.weight"},
           "classifier.weight": torch.zeros(2)}
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(AttnlabError) as e:
        load_backbone_weights(model.backbone, tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and "missing 1 key(s) (first: embedder.embedder.convolution.weight)" in msg
    assert "unexpected 1 key(s) (first: classifier.weight)" in msg
    wider = _detector(**{**TINY_RESNET, "resnet_widths": [32, 64, 128, 256]})
    with pytest.raises(AttnlabError, match="wrong shape in"):
        load_backbone_weights(wider.backbone, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for name, fragment in (("junk.safetensors", "not a readable safetensors"), ("absent.safetensors", "no such")):
        with pytest.raises(AttnlabError, match=fragment):
            load_backbone_weights(model.backbone, tmp_path / name)


@pytest.mark.parametrize("model, fragment", [({"d_model": 30, "n_heads": 4}, "divisible by --heads 4"),
                                             ({"ffn_dim": 0}, "--ffn-dim positive"),
                                             ({**TINY_RESNET, "d_model": 48, "n_heads": 4}, "multiple of 32"),
                                             ({**TINY_RESNET, "resnet_widths": [16, 32, 64]}, "4 stage widths"),
                                             ({**TINY_RESNET, "deformable_levels": 5}, "dense cross-attention. to 4"),
                                             ({"backbone": "vgg"}, "backbone must be one of")])
def test_model_options_are_validated(model, fragment):
    with pytest.raises(AttnlabError, match=fragment):
        TrainConfig(data="x", model=model)


def test_heads_and_ffn_flags_reach_the_model_and_the_config():
    from attnlab.cli import build_parser
    from attnlab.detr.cli import _train_config

    args = build_parser().parse_args(["detr", "train", "--data", "d", "-o", "o", "--d-model", "64", "--heads", "8",
                                      "--ffn-dim", "96"])
    cfg = _train_config(args, dac=False)
    assert cfg.model["n_heads"] == 8 and cfg.model["ffn_dim"] == 96
    model = Detector(ModelConfig.from_dict({**cfg.model, "num_classes": 2}))
    assert model.encoder[0].self_attn.num_heads == 8 and model.decoder[0].ffn[0].out_features == 96
    default = _train_config(build_parser().parse_args(["detr", "train", "--data", "d", "-o", "o"]), dac=False)
    assert (default.model["n_heads"], default.model["ffn_dim"]) == (4, 128)      # today's: 4 heads, 2 x d_model


def test_parameter_groups_have_the_deformable_detr_lrs():
    cfg = TrainConfig(data="x", lr=2e-4, model={**TINY_RESNET, "deformable_levels": 2})
    assert (cfg.lr_backbone_mult, cfg.lr_linear_proj_mult) == (0.1, 0.1)   # resnet50's defaults, recorded
    model = Detector(ModelConfig.from_dict({**cfg.model, "num_classes": 3}))
    groups = parameter_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    by = {g["group"]: [names[id(p)] for p in g["params"]] for g in groups}
    lrs = {g["group"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"base": 2e-4, "backbone": 2e-5, "linear_proj": 2e-5})
    assert all(n.startswith("backbone.body.") for n in by["backbone"])
    assert by["linear_proj"] and all("sampling_offsets" in n for n in by["linear_proj"])
    assert any(n.startswith("backbone.input_proj.") for n in by["base"])       # projections: the base lr
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(sum(by.values(), [])) == sorted(trainable)                 # each trainable one exactly once
    assert len(trainable) < len(list(model.parameters()))                     # stem + stage 1 left out
    # the small CNN keeps today's single group, in the model's order (old checkpoints' optimizer state fits)
    cnn = TrainConfig(data="x", model={**TINY_MODEL, "deformable_levels": 2})
    small = Detector(ModelConfig.from_dict({**cnn.model, "num_classes": 3}))
    (only,) = parameter_groups(small, cnn)
    assert [id(p) for p in only["params"]] == [id(p) for p in small.parameters()] and only["lr"] == cnn.lr


def test_the_lr_drop_schedules():
    official = TrainConfig(data="x", epochs=50, lr_drop_epoch=40)
    assert [official.lr_factor(e) for e in (0, 39, 40, 49)] == [1.0, 1.0, 0.1, 0.1]
    assert TrainConfig(data="x", epochs=9, lr_drop_epoch=3).lr_factor(8) == pytest.approx(0.01)  # StepLR repeats
    today = TrainConfig(data="x", epochs=12)
    assert [today.lr_factor(e) for e in (8, 9)] == [1.0, 0.1]                 # x0.1 at 75% of the epochs
    for bad in (0, 2.5):
        with pytest.raises(AttnlabError, match="lr_drop_epoch"):
            TrainConfig(data="x", lr_drop_epoch=bad)


def _cfg(data, **kw):
    return TrainConfig(**{"data": str(data), "image_size": 32, "epochs": 2, "batch_size": 8, "eval_every": 2,
                          "device": "cpu", "lr_drop_epoch": 1, "lr_linear_proj_mult": 0.5,
                          "model": {**TINY_MODEL, **TINY_RESNET, "deformable_levels": 2, "dac": True}, **kw})


def test_resume_keeps_the_groups_and_reproduces_the_run(tiny_data, tmp_path, monkeypatch):
    full = train(_cfg(tiny_data), tmp_path / "full", progress=False, quiet=True)
    monkeypatch.setattr(importlib.import_module("attnlab.detr.train"), "append_jsonl",
                        lambda path, entry: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_data), tmp_path / "resumed", progress=False, quiet=True)
    monkeypatch.undo()
    resumed = train(_cfg(tiny_data), tmp_path / "resumed", progress=False, quiet=True)
    a, _, groups_a = read_checkpoint(tmp_path / "full" / CHECKPOINT)
    b, _, groups_b = read_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    assert groups_a == groups_b
    # epoch 2 ran at x0.1 (the drop after epoch 1): base 1e-4, backbone 1e-5, sampling offsets 5e-5
    assert {g["group"]: g["lr"] for g in groups_b} == pytest.approx({"base": 1e-4, "backbone": 1e-5,
                                                                     "linear_proj": 5e-5})
    assert full["history"][-1]["AP"] == resumed["history"][-1]["AP"]
    saved = json.loads((tmp_path / "full" / "config.json").read_text())["train"]
    assert (saved["lr_backbone_mult"], saved["lr_linear_proj_mult"], saved["lr_drop_epoch"]) == (0.1, 0.5, 1)
    assert saved["model"]["backbone"] == "resnet50"


def test_a_run_saved_before_these_options_resumes(tiny_data, tmp_path):
    cfg = TrainConfig(data=str(tiny_data), image_size=32, epochs=1, batch_size=8, device="cpu",
                      model={k: v for k, v in TINY_MODEL.items()})
    train(cfg, tmp_path / "run", progress=False, quiet=True)
    new_train = ("lr_drop_epoch", "lr_backbone_mult", "lr_linear_proj_mult", "backbone_weights")
    new_model = ("backbone", "resnet_stem", "resnet_widths", "resnet_depths")
    for name, where in (("config.json", ("train",)), (".attnlab.json", ("config", "train"))):
        path = tmp_path / "run" / name
        doc = json.loads(path.read_text())
        section = doc
        for key in where:
            section = section[key]
        for key in new_train:
            section.pop(key, None)
        for key in new_model:
            section.get("model", {}).pop(key, None)
        path.write_text(json.dumps(doc))
    again = train(cfg, tmp_path / "run", progress=False, quiet=True)
    assert again["epoch"] == 1 and len(again["history"]) == 1                 # resumed, nothing retrained
    old_cfg, model, _ = load_run(tmp_path / "run")
    assert old_cfg.lr_backbone_mult == 1.0 and model.config.backbone == "cnn"


def test_train_with_backbone_weights_and_its_cli_refusals(tiny_data, tmp_path, run_cli):
    path, state = _resnet_state_file(tmp_path)
    base = ["detr", "train", "--data", tiny_data, "--d-model", "32", "--queries", "8", "--batch-size", "8",
            "--image-size", "32", "--epochs", "1", "--device", "cpu", "--quiet", "--backbone", "resnet50",
            "--resnet-stem", "8", "--resnet-widths", "16,32,64,128", "--resnet-depths", "1,1,1,1"]
    rc, out, err = run_cli(*base, "--backbone-weights", path, "-o", tmp_path / "run", "--json")
    assert rc == 0, err
    res = json.loads(out)
    _, model, _ = load_run(tmp_path / "run")
    assert res["parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad) > 10_000
    stem = "embedder.embedder.convolution.weight"                          # not trained: the file's weights
    assert torch.equal(model.backbone.body.state_dict()[stem], state[stem])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["backbone_weights"] == str(path) and saved["model"]["resnet_widths"] == [16, 32, 64, 128]
    command = json.loads((tmp_path / "run" / "record.json").read_text())["command"]
    for flags in ("--backbone resnet50", "--resnet-widths 16,32,64,128", "--resnet-depths 1,1,1,1",
                  "--resnet-stem 8", f"--backbone-weights {path}", "--lr-backbone-mult 0.1"):
        assert flags in command, (flags, command)
    for extra, fragment in ((["--lr-drop", "0.5", "--lr-drop-epoch", "3"], "give one"),
                            (["--backbone-weights", tmp_path / "nope.safetensors"], "no such file"),
                            (["--arch", "hf-deformable"], "options of --arch native"),
                            (["--heads", "5"], "divisible by --heads 5")):
        rc, out, err = run_cli(*base, *extra, "-o", tmp_path / "refused")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and fragment in err, (extra, err)
        assert not (tmp_path / "refused").exists()


def test_hf_deformable_groups_by_the_official_names():
    from attnlab.detr.hf import build_detector

    from .test_hf import HF_MODEL

    cfg = TrainConfig(data="x", arch="hf-deformable", lr=2e-4, lr_backbone_mult=0.1, lr_linear_proj_mult=0.1,
                      model=HF_MODEL)
    model = build_detector(3, cfg.model)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, cfg)
    by = {g["group"]: [names[id(p)] for p in g["params"]] for g in groups}
    assert {n.rsplit(".", 2)[-2] for n in by["linear_proj"]} == {"sampling_offsets", "reference_points"}
    assert {g["group"]: g["lr"] for g in groups}["linear_proj"] == pytest.approx(2e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(sum(by.values(), [])) == trainable
    # stages 2-4 of transformers' ResNet train (transformers' own name test would freeze them all: it wants
    # "stage.1", the parameters say "stages.1"); the stem and stage 1 stay frozen, as in Deformable DETR
    stages = ("model.model.backbone.model.encoder.stages.1.", "model.model.backbone.model.encoder.stages.2.",
              "model.model.backbone.model.encoder.stages.3.")
    assert by["backbone"] and all(n.startswith(stages) for n in by["backbone"])
    assert {n for n in trainable if n.startswith("model.model.backbone.")} == set(by["backbone"])
    assert all(not p.requires_grad for n, p in model.named_parameters()
               if n.startswith("model.model.backbone.") and not n.startswith(stages))
    # at the default multipliers: today's one group of every parameter, frozen ones included
    (only,) = parameter_groups(model, TrainConfig(data="x", arch="hf-deformable", model=HF_MODEL))
    assert [id(p) for p in only["params"]] == [id(p) for p in model.parameters()]
    assert not all(p.requires_grad for p in model.parameters())


def test_backbone_channels_flag_sets_the_cnn_levels_and_the_reproducing_command():
    from attnlab.cli import build_parser
    from attnlab.detr.cli import _train_config
    from attnlab.detr.train import train_flags

    args = build_parser().parse_args(["detr", "train", "--data", "d", "-o", "o", "--backbone-channels", "8,16,24,32",
                                      "--deformable-levels", "2"])
    cfg = _train_config(args, dac=False)
    model = Detector(ModelConfig.from_dict({**cfg.model, "num_classes": 2}))
    assert model.backbone.strides == [8, 16]                     # the last two of strides 2/4/8/16
    flags = train_flags(cfg)[0]
    assert flags[flags.index("--backbone-channels") + 1] == "8,16,24,32"
    default = _train_config(build_parser().parse_args(["detr", "train", "--data", "d", "-o", "o"]), dac=False)
    assert "--backbone-channels" not in train_flags(default)[0]
    with pytest.raises(AttnlabError, match="to 4"):
        TrainConfig(data="x", model={"backbone_channels": [8, 16, 24, 32], "deformable_levels": 5})
