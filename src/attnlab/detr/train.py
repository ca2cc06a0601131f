"""Training: AdamW with parameter groups (backbone, sampling offsets: Deformable DETR's) and an lr drop,
per-epoch atomic checkpoints (safetensors: weights, AdamW moments, RNG; the JSON state rides in the file's
metadata, so one rename commits all of it), resume that reproduces the uninterrupted run, periodic COCO
evaluation; bfloat16 autocast on CUDA; torchrun DDP (NCCL on CUDA, gloo on the CPU) with the one-process
result."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..core.atomic import append_jsonl, atomic_path, atomic_write_json
from ..core.errors import AttnlabError
from ..core.outputs import run_dir
from ..core.records import RunRecord
from ..core.runtime import choose_device, environment, seed_everything
from .data import CocoDetection, annotation_file, collate, fingerprint, make_transforms, open_split
from .distributed import Group, process_group, shard_batches
from .evaluate import coco_metrics, predict_images
from .losses import LossConfig, detr_loss
from .model import Detector, ModelConfig
from .variants import (
    ARCHS,
    AUGMENTATIONS,
    BACKBONES,
    C_QUERY_POS,
    CLS_LOSSES,
    HF_FIXED_OPTIONS,
    LR_MULT_DEFAULTS,
    O2M_BOX_SOURCES,
    O2M_TOPK_FROM,
    backbone_levels,
    hf_size_problem,
)

CHECKPOINT = "checkpoint.safetensors"
#: Config keys that do not change the result and may differ on resume.
RUNTIME_KEYS = ("device", "workers")
#: Config keys added after the first runs were saved, at the values those runs had.
ARCH_DEFAULTS = {"arch": "native", "from_pretrained": None, "two_stage": False, "lr_drop_epoch": None,
                 "lr_backbone_mult": 1.0, "lr_linear_proj_mult": 1.0, "backbone_weights": None}
#: Optimizer groups by parameter name (Deformable DETR's main.py: ``lr_backbone_names`` ["backbone.0"], the
#: feature extractor without the input projections; ``lr_linear_proj_names``), per architecture.
BACKBONE_PREFIX = {"native": "backbone.body.", "hf-deformable": "model.model.backbone."}
LINEAR_PROJ_NAMES = ("sampling_offsets", "reference_points")


def with_defaults(train: dict[str, Any]) -> dict[str, Any]:
    """``train`` with unset model and loss options filled in, so an option given at its default value
    compares equal to one left out (runs saved before an option existed still resume)."""
    model = {k: v for k, v in ModelConfig(num_classes=1).to_dict().items() if k != "num_classes"}
    return {**ARCH_DEFAULTS, **train, "model": {**model, **train.get("model", {})},
            "loss": {**asdict(LossConfig()), **train.get("loss", {})}}


@dataclass
class TrainConfig:
    data: str
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 48              # eval resize (shorter side); augmentation scales relative to it
    augment: str = "none"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_drop: float = 0.75             # lr x0.1 after this fraction of the epochs
    lr_drop_epoch: int | None = None  # instead: lr x0.1 every N epochs (official StepLR(lr_drop))
    lr_backbone_mult: float | None = None     # backbone lr = lr x this; None: variants.LR_MULT_DEFAULTS
    lr_linear_proj_mult: float | None = None  # sampling offsets (and reference points): lr x this; same default
    clip_grad: float = 0.1
    eval_every: int = 1               # epochs; the 25/50/75/100% points are always evaluated
    seed: int = 0
    device: str = "auto"
    amp: bool = False                 # bfloat16 autocast, CUDA only
    workers: int = 0                  # DataLoader worker processes
    model: dict[str, Any] = field(default_factory=dict)   # ModelConfig fields except num_classes
    loss: dict[str, Any] = field(default_factory=dict)    # LossConfig fields
    arch: str = "native"              # a key of variants.ARCHS
    from_pretrained: str | None = None  # hf-deformable: a local save_pretrained folder
    two_stage: bool = False           # hf-deformable: two-stage Deformable DETR
    backbone_weights: str | None = None  # native: a safetensors state dict of the backbone's body (fresh runs)

    def __post_init__(self) -> None:
        known_m = {f.name for f in fields(ModelConfig)} - {"num_classes"}
        known_l = {f.name for f in fields(LossConfig)}
        if set(self.model) - known_m:
            raise AttnlabError(f"unknown model option(s) {sorted(set(self.model) - known_m)} "
                               f"(known: {sorted(known_m)})")
        if set(self.loss) - known_l:
            raise AttnlabError(f"unknown loss option(s) {sorted(set(self.loss) - known_l)} (known: {sorted(known_l)})")
        self._check_model()
        self._check_optimizer()
        for key, registry in (("cls_loss", CLS_LOSSES), ("o2m_box_source", O2M_BOX_SOURCES),
                              ("o2m_topk_from", O2M_TOPK_FROM)):
            if self.loss.get(key, getattr(LossConfig, key)) not in registry:
                raise AttnlabError(f"{key} must be one of {', '.join(registry)}")
        if self.model.get("c_query_pos", ModelConfig.c_query_pos) not in C_QUERY_POS:
            raise AttnlabError(f"c_query_pos must be one of {', '.join(C_QUERY_POS)}")
        cap = self.loss.get("o2m_cap", 0)
        if type(cap) is not int or cap < 0:
            raise AttnlabError(f"o2m_cap must be a non-negative integer (0: no cap), got {cap!r}")
        if self.arch not in ARCHS:
            raise AttnlabError(f"arch must be one of {', '.join(ARCHS)}")
        if self.arch == "native" and (self.from_pretrained or self.two_stage):
            raise AttnlabError("--from-pretrained and --two-stage are options of --arch hf-deformable")
        fixed = [k for k, v in HF_FIXED_OPTIONS.items() if self.model.get(k, v) != v]
        if self.arch == "hf-deformable" and fixed:
            raise AttnlabError(f"--arch hf-deformable does not implement {', '.join(sorted(fixed))} (transformers' "
                               "decoder detaches its references; the C-decoder starts after layer 0's self-attention)")
        problem = hf_size_problem(self.model) if self.arch == "hf-deformable" and not self.from_pretrained else None
        if problem:
            raise AttnlabError(problem)
        if self.augment not in AUGMENTATIONS:
            raise AttnlabError(f"augment must be one of {', '.join(AUGMENTATIONS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise AttnlabError("epochs, batch_size and lr must be positive")

    def _check_model(self) -> None:
        m = {**ModelConfig(num_classes=1).to_dict(), **self.model}
        if m["backbone"] not in BACKBONES:
            raise AttnlabError(f"backbone must be one of {', '.join(BACKBONES)}")
        stages = backbone_levels(m)
        if not 0 <= m["deformable_levels"] <= stages or m["deformable_points"] < 1:
            raise AttnlabError(f"deformable_levels must be 0 (dense cross-attention) to {stages} (the backbone's "
                               "levels) and deformable_points at least 1")
        if m["deformable_encoder"] and not m["deformable_levels"]:
            raise AttnlabError("--deformable-encoder needs --deformable-levels N (the levels its tokens sample)")
        if m["n_heads"] < 1 or m["d_model"] % m["n_heads"] or m["ffn_dim"] < 1:
            raise AttnlabError(f"d_model {m['d_model']} must be divisible by --heads {m['n_heads']} and --ffn-dim "
                               f"positive (got {m['ffn_dim']}); e.g. --d-model 256 --heads 8")
        if m["backbone"] == "resnet50":
            widths, depths = m["resnet_widths"], m["resnet_depths"]
            if len(widths) != 4 or len(depths) != 4 or any(w % 4 or w < 4 for w in widths) or min(depths) < 1 \
                    or m["resnet_stem"] < 1 or m["d_model"] % 32:
                raise AttnlabError("--backbone resnet50 needs 4 stage widths divisible by 4 (bottleneck), 4 depths "
                                   f"of at least 1 and d_model a multiple of 32 (GroupNorm(32)); got widths {widths}, "
                                   f"depths {depths}, d_model {m['d_model']}")
        if self.arch != "native" and (m["backbone"] != "cnn" or self.backbone_weights):
            raise AttnlabError("--backbone and --backbone-weights are options of --arch native (hf-deformable builds "
                               "transformers' own ResNet; --from-pretrained loads its weights)")

    def _check_optimizer(self) -> None:
        default = LR_MULT_DEFAULTS[self.model.get("backbone", "cnn")] if self.arch == "native" else 1.0
        for key in ("lr_backbone_mult", "lr_linear_proj_mult"):
            if getattr(self, key) is None:
                setattr(self, key, default)        # recorded as a number in the run's config
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise AttnlabError(f"{key} must be a non-negative number, got {value!r}")
        drop = self.lr_drop_epoch
        if drop is not None and (type(drop) is not int or drop < 1):
            raise AttnlabError(f"lr_drop_epoch must be a positive integer epoch, got {drop!r}")

    def lr_factor(self, epoch: int) -> float:
        """The lr multiplier of 0-based ``epoch``: x0.1 every ``lr_drop_epoch`` epochs (the official code's
        ``StepLR(optimizer, lr_drop)``), else x0.1 once from ``round(epochs x lr_drop)``."""
        if self.lr_drop_epoch:
            return 0.1 ** (epoch // self.lr_drop_epoch)
        return 0.1 if epoch >= max(1, round(self.epochs * self.lr_drop)) else 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result_keys(self) -> dict[str, Any]:
        """The config entries that determine the result (a resumed run must match them)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}

    def eval_epochs(self) -> list[int]:
        quarters = {max(1, math.ceil(self.epochs * f)) for f in (0.25, 0.5, 0.75, 1.0)}
        return sorted(quarters | set(range(self.eval_every, self.epochs + 1, self.eval_every)))


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The detector of ``cfg.arch``: called as ``model(images, mask)``, it returns per-layer ``logits`` and
    ``boxes`` (and the C-decoder's while training with DAC)."""
    if cfg.arch == "hf-deformable":
        from .hf import build_detector

        return build_detector(num_classes, cfg.model, cfg.two_stage, cfg.from_pretrained)
    return Detector(ModelConfig.from_dict({**cfg.model, "num_classes": num_classes}))


def parameter_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters, each with its ``lr_mult``: the backbone's feature extractor
    at ``lr_backbone_mult``, sampling offsets (and reference points) at ``lr_linear_proj_mult`` (Deformable
    DETR Sec. 4.1 / main.py), the rest at 1. All multipliers 1: one group in the model's parameter order, as
    runs saved before the groups existed have it, frozen parameters included (their optimizer state, indexed
    by position, resumes)."""
    if cfg.lr_backbone_mult == 1 and cfg.lr_linear_proj_mult == 1:
        return [{"params": list(model.parameters()), "lr": cfg.lr, "lr_mult": 1.0, "group": "all"}]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefix = BACKBONE_PREFIX[cfg.arch]

    def kind(name: str) -> str:
        if name.startswith(prefix):
            return "backbone"
        return "linear_proj" if any(k in name for k in LINEAR_PROJ_NAMES) else "base"

    mults = {"base": 1.0, "backbone": float(cfg.lr_backbone_mult), "linear_proj": float(cfg.lr_linear_proj_mult)}
    groups = [{"params": [p for n, p in named if kind(n) == k], "lr": cfg.lr * m, "lr_mult": m, "group": k}
              for k, m in mults.items()]
    return [g for g in groups if g["params"]]


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, i, k = name.split(".", 2)
            state.setdefault(int(i), {})[k] = t
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        # tied weights (transformers' heads) are one tensor under several names: safetensors wants copies
        tensors[f"model.{k}"] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    opt_tensors, groups = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(groups)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[dict[str, Any]]]:
    """Tensors, training state and optimizer groups of a checkpoint (safetensors: no code is executed)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return tensors, json.loads(meta["state"]), json.loads(meta.get("param_groups", "[]"))
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise AttnlabError(f"{path}: not a readable attnlab detr checkpoint ({type(e).__name__}: {e})") from None


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    bad = sorted(set(own) ^ set(weights)) + [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if bad:
        raise AttnlabError(f"{path} was saved from another model configuration (mismatch in {bad[0]}"
                           f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); use the run's own config.json")
    model.load_state_dict(weights)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[TrainConfig, torch.nn.Module, dict[str, Any]]:
    """The config, the trained model (eval mode) and the training state of a run directory."""
    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.is_file() or not (run / CHECKPOINT).is_file():
        raise AttnlabError(f"{run} is not a detr run (needs config.json and {CHECKPOINT}; make one with "
                           "`attnlab detr train`)")
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg, num_classes = TrainConfig(**saved["train"]), int(saved["num_classes"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise AttnlabError(f"{cfg_path}: malformed run config ({type(e).__name__}: {e})") from None
    model = build_model(cfg, num_classes)
    tensors, state, _ = read_checkpoint(run / CHECKPOINT)
    load_weights(model, tensors, run / CHECKPOINT)
    recorded = {k: saved.get(k) for k in ("names", "cat_ids", "data_fingerprint")}
    return cfg, model.to(device).eval(), {**state, **recorded}


class Evaluation(NamedTuple):
    """What :func:`evaluate_run` gives: the run's config and state, the metrics, and the COCO detections."""

    config: TrainConfig
    state: dict[str, Any]
    metrics: dict[str, Any]
    detections: list[dict[str, Any]]


def evaluate_run(run: str | Path, data: str | None = None, split: str | None = None,
                 allow_changed_data: bool = False, device: str = "cpu", batch_size: int = 64) -> Evaluation:
    """The run's COCO metrics on ``split`` of ``data`` (default: its own validation split), scored by
    pycocotools against the split's annotation file as it is, with the detections (original image and
    category ids). A split whose annotation file differs from the one the run recorded is refused (the AP
    would silently measure another dataset) unless ``allow_changed_data``; metrics say which was the case."""
    device = choose_device(device)
    cfg, model, state = load_run(run, device)
    data, split = data or cfg.data, split or cfg.val_split
    recorded = (state.get("data_fingerprint") or {}).get(split)
    now = fingerprint(data, split) if recorded else None
    if recorded and now != recorded and not allow_changed_data:
        raise AttnlabError(f"{annotation_file(data, split)} differs from the {split} annotations {run} was trained "
                           f"with ({recorded['bytes']} -> {now['bytes']} bytes, sha256 {recorded['sha256'][:12]} -> "
                           f"{now['sha256'][:12]}); pass --allow-changed-data to evaluate on it anyway")
    ds = open_split(data, split, make_transforms("none", False, cfg.image_size))
    if ds.cat_ids != state["cat_ids"]:
        raise AttnlabError(f"{run} was trained on categories {state['cat_ids']}, the data has {ds.cat_ids}")
    pred = predict_images(model, ds, range(len(ds)), batch_size, device)
    metrics = coco_metrics(ds, [pred])
    metrics["annotations_as_recorded"] = None if not recorded else now == recorded
    return Evaluation(cfg, state, metrics, pred.detections)


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters (DAC adds none: the C-decoder shares the O-decoder's)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The result-determining entries in which two runs' saved configs differ (defaults filled in)."""
    old_train = with_defaults({k: v for k, v in old.get("train", {}).items() if k not in RUNTIME_KEYS})
    new_train = with_defaults(new["train"])
    diff = sorted(k for k in set(old_train) | set(new_train) if old_train.get(k) != new_train.get(k))
    if old.get("num_classes") != new["num_classes"]:
        diff.append("classes")
    if old.get("data_fingerprint") != new["data_fingerprint"]:
        diff.append("the dataset's annotations")
    return diff


def _prepare_run(out: Path, saved: dict[str, Any], overwrite: bool, quiet: bool) -> bool:
    """Make ``out`` this run's folder; True when it resumes (the same run was started there before).

    Equivalence is decided on config.json with defaults filled in (a run saved before an option existed
    resumes with that option at its default); the folder's marker then carries the config as first saved."""
    old_path = out / "config.json"
    if old_path.is_file() and not overwrite:
        try:
            old = json.loads(old_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AttnlabError(f"{old_path} is not readable JSON; pass --overwrite to replace the run, or choose "
                               "another -o") from None
        diff = _differences(old, saved)
        if diff:
            raise AttnlabError(f"{out} holds a run with another configuration (differs in: {', '.join(diff)}); "
                               "pass --overwrite to replace it, choose another -o, or use the same flags to resume")
        saved = old
    marker = {"train": saved["train"], "data_fingerprint": saved.get("data_fingerprint")}
    return run_dir(out, marker, overwrite, what="detr training run", quiet=quiet)[1]


def open_data(cfg: TrainConfig) -> tuple[CocoDetection, CocoDetection, dict[str, dict[str, Any]]]:
    """The training and validation splits, checked, and the fingerprints of their annotation files."""
    train_ds = open_split(cfg.data, cfg.train_split, make_transforms(cfg.augment, True, cfg.image_size), cfg.seed)
    val_ds = open_split(cfg.data, cfg.val_split, make_transforms("none", False, cfg.image_size), cfg.seed)
    if val_ds.cat_ids != train_ds.cat_ids:
        raise AttnlabError(f"train and val splits have different categories ({train_ds.cat_ids} vs {val_ds.cat_ids})")
    return train_ds, val_ds, {split: fingerprint(cfg.data, split) for split in (cfg.train_split, cfg.val_split)}


def require_amp_device(amp: bool, device: str) -> None:
    """``--amp`` (bfloat16 autocast) is a CUDA feature: elsewhere it is refused rather than recorded as on."""
    if amp and not device.startswith("cuda"):
        raise AttnlabError(f"--amp (bfloat16 autocast) runs on CUDA only, and this run's device is {device}; "
                           "drop --amp")


def evaluate_sharded(model: torch.nn.Module, val_ds: CocoDetection, group: Group) -> dict[str, Any]:
    """COCO metrics on ``val_ds``: each process predicts its share of the images (``rank::world``), rank 0
    scores the gathered detections, every process gets the metrics."""
    part = predict_images(model, val_ds, range(group.rank, len(val_ds), group.world), device=group.device)
    parts = group.gather(part)
    return group.on_main(lambda: coco_metrics(val_ds, parts))


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True, quiet: bool = False,
          overwrite: bool = False) -> dict[str, Any]:
    """Train (or resume) into ``out_dir``; returns the final state with the evaluation history.

    The same config in the same folder resumes from the last checkpoint (one stderr line says so); another
    config, or changed annotations, is refused unless ``overwrite`` (which starts the run afresh).
    ``progress``: tqdm bars; ``quiet``: no status lines (resume, one line per epoch).

    Under torchrun this is one process of a DDP run (:mod:`~attnlab.detr.distributed`): ``cfg.batch_size``
    is the global batch, split over the processes, and the normalisers are all-reduced, so the result is
    the one-process result up to float rounding. Rank 0 alone writes the folder; every process returns the
    same state."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AttnlabError(f"{out} is a file, not a folder (choose another -o)")
    with process_group(cfg.device) as group:
        require_amp_device(cfg.amp, group.device)
        return _train(cfg, out, group, progress, quiet, overwrite)


def _load_backbone(model: torch.nn.Module, cfg: TrainConfig) -> None:
    from .backbone import load_backbone_weights

    load_backbone_weights(model.backbone, cfg.backbone_weights)


def _train(cfg: TrainConfig, out: Path, group: Group, progress: bool, quiet: bool, overwrite: bool) -> dict[str, Any]:
    from tqdm import tqdm

    device = group.device
    seed_everything(cfg.seed)
    train_ds, val_ds, prints = open_data(cfg)
    saved = {"train": cfg.result_keys(), "num_classes": train_ds.num_classes, "names": train_ds.names,
             "cat_ids": train_ds.cat_ids, "data_fingerprint": prints}
    model = build_model(cfg, train_ds.num_classes).to(device)  # before the folder: a checkpoint may not load
    ckpt = out / CHECKPOINT
    # Backbone weights start a run (bad ones are refused before the folder is made); a resumed run has its own.
    weights_first = bool(cfg.backbone_weights) and (overwrite or not ckpt.is_file())
    if weights_first:
        _load_backbone(model, cfg)
    resuming = group.on_main(lambda: _prepare_run(out, saved, overwrite, quiet))
    if cfg.backbone_weights and not weights_first and not (resuming and ckpt.is_file()):
        _load_backbone(model, cfg)
    loss_fn = getattr(model, "loss", detr_loss)                  # hf-deformable adds its two-stage proposal loss
    opt = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_cfg = LossConfig(**cfg.loss)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "train_seconds": 0.0}
    if resuming and ckpt.is_file():
        tensors, state, groups = read_checkpoint(ckpt)
        load_weights(model, tensors, ckpt)
        opt.load_state_dict(_unflatten_optimizer(tensors, groups))
        torch.set_rng_state(tensors["rng.torch"])
    elif group.main:
        atomic_write_json(out / "config.json", {**saved, "env": {**environment(), "processes": group.world}})
    state["parameters"] = parameter_count(model)
    net = model
    if group.world > 1:
        gpu = None if device == "cpu" else [torch.device(device)]
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=gpu)
    eval_epochs = cfg.eval_epochs()
    for epoch in range(state["epoch"], cfg.epochs):
        for g in opt.param_groups:                              # saved before the groups: no lr_mult, one group
            g["lr"] = cfg.lr * g.get("lr_mult", 1.0) * cfg.lr_factor(epoch)
        train_ds.epoch = epoch
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        batches = shard_batches(order.tolist(), cfg.batch_size, group.rank, group.world)
        loader = torch.utils.data.DataLoader(train_ds, batch_sampler=batches, collate_fn=collate,
                                             num_workers=cfg.workers)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
                   disable=not progress or not group.main, leave=False)
        net.train()
        t0, loss_sum = time.perf_counter(), 0.0
        for images, mask, targets in bar:
            images, mask = images.to(device), mask.to(device)
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            # DDP averages gradients over the processes: normalising by (all objects / processes) makes
            # that average the gradient of the one-process loss over the global batch.
            num_objects = max(group.sum(float(sum(len(t["labels"]) for t in targets))), 1.0) / group.world
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp):
                outputs = net(images, mask)
            try:
                loss, parts = loss_fn(outputs, targets, loss_cfg, num_objects, (cfg.seed, state["step"]))
            except FloatingPointError as e:
                raise AttnlabError(f"training diverged at epoch {epoch + 1}, step {state['step'] + 1} ({e}); the last "
                                   f"checkpoint in {out} is intact: lower --lr and train into a new -o") from None
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            state["step"] += 1
            loss_sum += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        seconds = time.perf_counter() - t0
        state["epoch"] = epoch + 1
        state["train_seconds"] += seconds
        steps = max(len(batches), 1)
        entry = {"epoch": epoch + 1, "step": state["step"],
                 "loss": round(group.sum(loss_sum) / group.world / steps, 5),
                 "seconds_per_step": round(seconds / steps, 5)}
        if epoch + 1 in eval_epochs:
            entry.update(evaluate_sharded(model, val_ds, group))
        state["history"].append(entry)
        if group.main:
            save_checkpoint(ckpt, model, opt, state)
            append_jsonl(out / "log.jsonl", entry)
            if not quiet:
                shown = ", ".join(f"{k} {entry[k]}" for k in ("loss", "AP", "AP50", "AP75")
                                  if entry.get(k) is not None)
                print(f"[{out.name}] epoch {epoch + 1}/{cfg.epochs} step {state['step']}: {shown}", file=sys.stderr)
        group.barrier()
    if group.main:
        atomic_write_json(out / "metrics.json", {"final": state["history"][-1] if state["history"] else {},
                                                 "history": state["history"], "train_seconds": state["train_seconds"],
                                                 "parameters": state["parameters"]})
        run_record(cfg, state, out).save(out / "record.json")
    group.barrier()
    return state


#: TrainConfig entries (flattened: model and loss options beside the rest) that `attnlab detr train` flags
#: set, with the flag; a switch is given when its value is not the default. ``ffn_dim`` follows ``--d-model``.
TRAIN_FLAGS = {"train_split": "--train-split", "val_split": "--val-split", "epochs": "--epochs",
               "batch_size": "--batch-size", "lr": "--lr", "lr_drop": "--lr-drop", "clip_grad": "--clip-grad",
               "lr_drop_epoch": "--lr-drop-epoch", "lr_backbone_mult": "--lr-backbone-mult",
               "lr_linear_proj_mult": "--lr-linear-proj-mult", "backbone": "--backbone",
               "backbone_weights": "--backbone-weights", "backbone_channels": "--backbone-channels",
               "resnet_stem": "--resnet-stem",
               "resnet_widths": "--resnet-widths", "resnet_depths": "--resnet-depths", "n_heads": "--heads",
               "ffn_dim": "--ffn-dim",
               "image_size": "--image-size", "augment": "--augment", "eval_every": "--eval-every", "amp": "--amp",
               "d_model": "--d-model", "num_queries": "--queries", "enc_layers": "--enc-layers",
               "dec_layers": "--dec-layers", "deformable_levels": "--deformable-levels",
               "deformable_points": "--deformable-points", "deformable_encoder": "--deformable-encoder",
               "cls_loss": "--cls-loss",
               "o2m_box_source": "--o2m-box-source", "o2m_topk": "--o2m-topk", "o2m_cap": "--o2m-cap",
               "o2m_topk_from": "--o2m-topk-from", "c_query_pos": "--c-query-pos",
               "look_forward_twice": "--look-forward-twice",
               "c_share_first_self_attn": "--no-shared-first-self-attn", "dac": "--dac", "arch": "--arch",
               "from_pretrained": "--from-pretrained", "two_stage": "--two-stage"}


def _flat(train: dict[str, Any]) -> dict[str, Any]:
    full = with_defaults(train)
    return {**{k: v for k, v in full.items() if k not in ("model", "loss")}, **full["model"], **full["loss"]}


def train_flags(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """The CLI flags that reproduce ``cfg`` (``--data`` and ``--seed`` first, then each entry away from its
    default), and the entries that differ from the default but have no flag (set through the Python API)."""
    ours, default = _flat(cfg.result_keys()), _flat(TrainConfig(data=cfg.data).result_keys())
    default["ffn_dim"] = 2 * ours["d_model"]
    flags, api_only = ["--data", str(cfg.data), "--seed", str(cfg.seed)], []
    for key, value in ours.items():
        if key in ("data", "seed") or value == default[key]:
            continue
        if key not in TRAIN_FLAGS:
            api_only.append(f"{key}={value}")
        elif isinstance(value, bool):
            flags.append(TRAIN_FLAGS[key])
        elif isinstance(value, (list, tuple)):
            flags += [TRAIN_FLAGS[key], ",".join(map(str, value))]
        else:
            flags += [TRAIN_FLAGS[key], str(value)]
    return flags, api_only


def reproducing_command(prefix: str, cfg: TrainConfig, rec: RunRecord, extra: list[str]) -> str:
    """``prefix`` + the flags of ``cfg`` + ``extra``; entries no flag sets are named in the record's notes."""
    flags, api_only = train_flags(cfg)
    if api_only:
        rec.notes.append("Set through the Python API (no CLI flag; the command does not reproduce them): "
                         + ", ".join(api_only) + ".")
    return " ".join([prefix, *flags, *extra])


def run_record(cfg: TrainConfig, state: dict[str, Any], out: Path) -> RunRecord:
    """The run as an attnlab record (config, seed, versions, final metrics, evaluation history)."""
    variant = "DAC" if cfg.model.get("dac") else "baseline"
    rec = RunRecord(name=f"detr-{out.name}", title=f"detr: {variant} run {out.name}", command="", seed=cfg.seed,
                    config=cfg.to_dict())
    rec.command = reproducing_command("attnlab detr train", cfg, rec, ["-o", str(out)])
    evals = [h for h in state["history"] if h.get("AP") is not None]
    if evals:
        rec.metrics.update({k: v for k, v in evals[-1].items() if k != "seconds_per_step"})
    rec.metrics["parameters"] = state["parameters"]
    rec.timings["train"] = round(state["train_seconds"], 3)
    keys = ["epoch", "step", "loss", "AP", "AP50", "AP75", "queries_per_object@0.7"]
    rec.add_table("Evaluation history (val)", keys, [[h.get(k) for k in keys] for h in evals])
    return rec
