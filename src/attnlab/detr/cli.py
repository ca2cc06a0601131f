"""``attnlab detr``: make synthetic COCO data, train (optionally with DAC), evaluate, predict, compare.

Only argparse and light modules are imported here; each command imports torch when it runs."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from pathlib import Path

from ..core.clikit import (
    add_device,
    add_grid,
    add_out,
    emit,
    grid_options,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    show_progress,
)
from ..core.errors import AttnlabError
from .variants import (
    ARCHS,
    AUGMENTATIONS,
    BACKBONE_TEXT,
    BACKBONES,
    C_QUERY_POS,
    CLS_LOSSES,
    DATASETS,
    O2M_BOX_SOURCES,
    O2M_TOPK_FROM,
    OFFICIAL_DAC,
    describe,
)


def _fraction(text: str) -> float:
    """A score threshold: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    """Comma-separated positive integers (``3,4,6,3``)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 3,4,6,3, got {text!r}")
    return values


def _keep_inputs(out: str | None, *inputs: str | None) -> None:
    """Refuse an -o that is, or holds, one of the command's inputs (--overwrite would delete it)."""
    if out is None:
        return
    target = Path(out).resolve()
    for given in filter(None, inputs):
        path = Path(given).resolve()
        if path == target or target in path.parents:
            raise AttnlabError(f"-o {out} would replace {given}, an input of this command; choose another -o")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `train` and `compare`; ``attnlab.detr.train.TRAIN_FLAGS`` maps them back to the config."""
    p.add_argument("--data", required=True, help="COCO-format folder (annotations/instances_<split>.json + <split>/)")
    p.add_argument("--train-split", default="train", help="training split name (COCO: train2017)")
    p.add_argument("--val-split", default="val", help="evaluation split name (COCO: val2017)")
    p.add_argument("--epochs", type=positive_int, default=12, help="training epochs (default 12)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per step, over all processes under torchrun (default 32)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--lr-drop", type=positive_float, default=None,
                   help="lr x0.1 after this fraction of the epochs (default 0.75)")
    p.add_argument("--lr-drop-epoch", type=positive_int, default=None, metavar="EPOCH",
                   help="instead: lr x0.1 every EPOCH epochs (the official code's StepLR(lr_drop); 40 of 50)")
    p.add_argument("--lr-backbone-mult", type=nonneg_float, default=None,
                   help="backbone lr = --lr x this (default 0.1 with resnet50, as Deformable DETR; 1 with cnn)")
    p.add_argument("--lr-linear-proj-mult", type=nonneg_float, default=None,
                   help="sampling offsets' lr = --lr x this (default 0.1 with resnet50, as Deformable DETR; 1 with "
                        "cnn)")
    p.add_argument("--clip-grad", type=nonneg_float, default=0.1, help="gradient-norm clip, 0 = off (default 0.1)")
    p.add_argument("--image-size", type=positive_int, default=48, help="shorter side at eval; augmentation scales "
                   "relative to it (default 48; COCO 800)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="none",
                   help=f"training augmentation: {describe(AUGMENTATIONS)} (default none)")
    p.add_argument("--eval-every", type=positive_int, default=1, help="evaluate every N epochs (default 1)")
    p.add_argument("--arch", choices=ARCHS, default="native", help=f"the detector: {describe(ARCHS)} (default native)")
    p.add_argument("--from-pretrained", metavar="DIR", default=None,
                   help="hf-deformable: start from this local save_pretrained folder (its architecture; the class "
                        "head is resized to the data's classes); default: a randomly initialised one sized by the "
                        "flags below")
    p.add_argument("--two-stage", action="store_true", help="hf-deformable: two-stage Deformable DETR")
    p.add_argument("--backbone", choices=BACKBONES, default="cnn",
                   help=f"native backbone: {describe(BACKBONE_TEXT)} (default cnn)")
    p.add_argument("--backbone-weights", metavar="FILE", default=None,
                   help="start the backbone from this safetensors state dict (resnet50: transformers' ResNetModel "
                        "state dict; every key checked; nothing downloaded)")
    p.add_argument("--backbone-channels", type=_int_list, default=[32, 64, 96],
                   help="cnn: channels of its stride-2 stages, one level each (default 32,64,96: strides 2/4/8; "
                        "32,64,96,128: strides 2-16)")
    p.add_argument("--resnet-widths", type=_int_list, default=[256, 512, 1024, 2048],
                   help="resnet50 stage output channels (default 256,512,1024,2048; smaller for quick runs)")
    p.add_argument("--resnet-depths", type=_int_list, default=[3, 4, 6, 3],
                   help="resnet50 bottleneck blocks per stage (default 3,4,6,3)")
    p.add_argument("--resnet-stem", type=positive_int, default=64, help="resnet50 stem channels (default 64)")
    p.add_argument("--d-model", type=positive_int, default=64, help="transformer width (default 64)")
    p.add_argument("--heads", type=positive_int, default=4,
                   help="attention heads; d_model must be divisible by it (default 4)")
    p.add_argument("--ffn-dim", type=positive_int, default=None, help="FFN hidden width (default 2 x --d-model)")
    p.add_argument("--queries", type=positive_int, default=16, help="object queries (default 16)")
    p.add_argument("--enc-layers", type=nonneg_int, default=1, help="encoder layers (default 1)")
    p.add_argument("--dec-layers", type=positive_int, default=3, help="decoder layers (default 3)")
    p.add_argument("--deformable-levels", type=nonneg_int, default=0,
                   help="0: dense cross-attention (default); N: multi-scale deformable cross-attention over the "
                        "backbone's last N stages")
    p.add_argument("--deformable-points", type=positive_int, default=4,
                   help="deformable sampling points per head and level (default 4)")
    p.add_argument("--deformable-encoder", action="store_true",
                   help="deformable encoder self-attention over the --deformable-levels levels (Deformable DETR); "
                        "default: dense")
    p.add_argument("--cls-loss", choices=CLS_LOSSES, default=None,
                   help="classification loss: focal, or ia_bce (IoU-aware BCE, as the released DAC) (default focal)")
    p.add_argument("--o2m-box-source", choices=O2M_BOX_SOURCES, default=None,
                   help=f"boxes scored by the one-to-many assigner: {describe(O2M_BOX_SOURCES)} (default c)")
    p.add_argument("--o2m-topk", type=positive_int, default=6,
                   help="most positives per object in the one-to-many assigner (default 6, the paper's)")
    p.add_argument("--o2m-cap", type=nonneg_int, default=None, metavar="N",
                   help="at most N one-to-many positives per image, drawn at random (seeded by --seed, the step, "
                        "the layer and the image id); default 0: no cap; official 75")
    p.add_argument("--o2m-topk-from", choices=O2M_TOPK_FROM, default=None,
                   help=f"an object's one-to-many queries: {describe(O2M_TOPK_FROM)} (default own)")
    p.add_argument("--c-query-pos", choices=C_QUERY_POS, default=None,
                   help=f"the C-decoder's positional query: {describe(C_QUERY_POS)} (default c)")
    p.add_argument("--look-forward-twice", action="store_true",
                   help="each layer's boxes refine the previous layer's undetached boxes (DINO; official configs)")
    p.add_argument("--no-shared-first-self-attn", action="store_true",
                   help="feed the C-decoder the raw queries instead of layer 0's self-attention output")
    p.add_argument("--official-dac", action="store_true",
                   help="the released DAC-DETR code's choices: " + _official_text() + " (train: implies --dac; "
                        "compare: both variants get the options, DAC adds the C-decoder)")
    add_device(p)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only; refused elsewhere)")
    p.add_argument("--workers", dest="loader_workers", type=nonneg_int, default=0,
                   help="DataLoader worker processes (default 0)")


#: The flags of the options `--official-dac` sets, and their defaults without it.
_PRESET_FLAGS = {"cls_loss": ("--cls-loss", "focal"), "o2m_box_source": ("--o2m-box-source", "c"),
                 "o2m_topk_from": ("--o2m-topk-from", "own"), "o2m_cap": ("--o2m-cap", 0),
                 "c_query_pos": ("--c-query-pos", "c"), "look_forward_twice": ("--look-forward-twice", False)}


def _official_text() -> str:
    return ", ".join(f"{_PRESET_FLAGS[k][0]} {v}" if not isinstance(v, bool) else _PRESET_FLAGS[k][0]
                     for section in OFFICIAL_DAC.values() for k, v in section.items() if k in _PRESET_FLAGS)


def _preset_options(args: argparse.Namespace) -> dict:
    """The options `--official-dac` governs: as given, else the official value with the switch, else the
    default. A flag given with another value than the switch sets is refused (which one was meant?)."""
    official = {k: v for section in OFFICIAL_DAC.values() for k, v in section.items()}
    out = {}
    for key, (flag, default) in _PRESET_FLAGS.items():
        given = getattr(args, key)
        if given is False:                                   # a switch left off: not given
            given = None
        if args.official_dac and given is not None and given != official[key]:
            raise AttnlabError(f"--official-dac sets {flag} {official[key]}, and {flag} {given} was given too; "
                               "drop one of them")
        out[key] = given if given is not None else official[key] if args.official_dac else default
    return out


def _train_config(args: argparse.Namespace, dac: bool):
    from .train import TrainConfig

    preset = _preset_options(args)
    if args.lr_drop is not None and args.lr_drop_epoch is not None:
        raise AttnlabError("--lr-drop (a fraction of the epochs) and --lr-drop-epoch (an epoch) both set the drop; "
                           "give one")
    model = {"d_model": args.d_model, "num_queries": args.queries, "enc_layers": args.enc_layers,
             "dec_layers": args.dec_layers, "ffn_dim": args.ffn_dim or 2 * args.d_model, "n_heads": args.heads,
             "backbone": args.backbone, "backbone_channels": args.backbone_channels,
             "resnet_widths": args.resnet_widths, "resnet_depths": args.resnet_depths,
             "resnet_stem": args.resnet_stem, "dac": dac,
             "c_share_first_self_attn": not args.no_shared_first_self_attn,
             "deformable_levels": args.deformable_levels, "deformable_points": args.deformable_points,
             "deformable_encoder": args.deformable_encoder,
             "look_forward_twice": preset["look_forward_twice"], "c_query_pos": preset["c_query_pos"]}
    loss = {"o2m_topk": args.o2m_topk, **{k: preset[k] for k in ("cls_loss", "o2m_box_source", "o2m_topk_from",
                                                                   "o2m_cap")}}
    return TrainConfig(data=args.data, train_split=args.train_split, val_split=args.val_split, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr,
                       lr_drop=0.75 if args.lr_drop is None else args.lr_drop, lr_drop_epoch=args.lr_drop_epoch,
                       lr_backbone_mult=args.lr_backbone_mult, lr_linear_proj_mult=args.lr_linear_proj_mult,
                       backbone_weights=args.backbone_weights, clip_grad=args.clip_grad,
                       image_size=args.image_size, augment=args.augment, eval_every=args.eval_every, seed=args.seed,
                       device=args.device, amp=args.amp, workers=args.loader_workers, model=model, loss=loss,
                       arch=args.arch, from_pretrained=args.from_pretrained, two_stage=args.two_stage)


#: make-data's generator flags (synthetic.DEFAULTS' keys, dashed) with their types, defaults and help.
MAKE_DATA_FLAGS = (("n-train", positive_int, 4000, "training images"),
                   ("n-val", positive_int, 500, "validation images"),
                   ("image-size", positive_int, 48, "canvas side in pixels"),
                   ("min-objects", positive_int, 1, "objects per image, at least"),
                   ("max-objects", positive_int, 3, "objects per image, at most"),
                   ("min-size", positive_int, 10, "object side in pixels, at least"),
                   ("max-size", positive_int, 18, "object side in pixels, at most"),
                   ("max-overlap", _fraction, 0.1, "largest IoU a new object may have with one already placed"),
                   ("noise", nonneg_float, 12.0, "sd of the background noise, in grey levels of 255"))


def register(subparsers, common) -> None:
    group = subparsers.add_parser("detr", help="DETR detectors trained with DAC (Hu et al. 2023)",
                                  description="DETR-family detection on COCO-format data; --dac trains the "
                                              "parameter-shared C-decoder (no self-attention, one-to-many matching).",
                                  epilog="Example: attnlab detr make-data synthetic-digits -o data/digits && "
                                         "attnlab detr train --data data/digits --dac --epochs 12 -o runs/dac")
    sub = group.add_subparsers(dest="detr_command", metavar="SUBCOMMAND")

    p = sub.add_parser("make-data", parents=[common], help="write a synthetic COCO dataset (JSON + PNG)",
                       description="Multi-object scenes from scikit-learn's 8x8 digits or procedural shapes, "
                                   "written as COCO JSON + PNG with fixed train/val splits. The folder is written "
                                   "in one go; --overwrite replaces an existing dataset whole.",
                       epilog="Example: attnlab detr make-data synthetic-digits -o data/digits --n-train 4000")
    p.add_argument("kind", choices=DATASETS, help=f"the benchmark: {describe(DATASETS)}")
    add_out(p, required=True, what="dataset folder")
    for flag, kind, default, what in MAKE_DATA_FLAGS:
        p.add_argument(f"--{flag}", type=kind, default=default, help=f"{what} (default {default})")
    p.set_defaults(func=_cmd_make_data, light=True)

    p = sub.add_parser("train", parents=[common], help="train a detector (resumes an interrupted run)",
                       description="Train on a COCO-format folder with periodic COCO evaluation and per-epoch "
                                   "atomic checkpoints. Rerun the same command to resume; another configuration "
                                   "or changed annotations in the same -o are refused unless --overwrite.",
                       epilog="Example: attnlab detr train --data data/digits --dac --epochs 12 -o runs/dac "
                              "--threads 1")
    _add_train_flags(p)
    p.add_argument("--dac", action="store_true", help="train with DAC's C-decoder (no extra parameters)")
    add_out(p, required=True, what="run directory")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", parents=[common], help="COCO AP and the queries-per-object diagnostic of a run",
                       description="Evaluate a trained run with pycocotools against the split's annotation file "
                                   "as it is (not the cleaned training targets). --save-predictions writes the "
                                   "detections as a COCO results JSON (the file's image and category ids; "
                                   "COCO.loadRes reads it). Annotations that differ from those the run was "
                                   "trained with are refused unless --allow-changed-data.",
                       epilog="Example: attnlab detr eval runs/dac --save-predictions runs/dac-val.json --json")
    p.add_argument("run", help="a run directory written by `attnlab detr train`")
    p.add_argument("--data", default=None, help="dataset folder (default: the run's)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the run's val split)")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate even if the split's annotation file differs from the one the run recorded")
    p.add_argument("--save-predictions", metavar="FILE", default=None,
                   help="write the detections as a COCO results JSON (refused if FILE exists, unless --overwrite)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    add_device(p)
    add_out(p, what="folder for record.json (default: none written)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", parents=[common], help="detect objects in images and draw the boxes",
                       epilog="Example: attnlab detr predict runs/dac data/digits/val/000001.png -o preds")
    p.add_argument("run", help="a run directory written by `attnlab detr train`")
    p.add_argument("images", nargs="+", help="image files (PNG or JPEG)")
    p.add_argument("--threshold", type=_fraction, default=0.3, help="minimum score, 0 to 1 (default 0.3)")
    add_out(p, default="detections", what="folder for the drawn PNGs and record.json")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("compare", parents=[common], help="baseline vs DAC at equal epochs over seeds",
                       description="Trains baseline and DAC for each seed, one grid job per run (--jobs processes, "
                                   "or Ray tasks with --backend ray; resumable, and several processes may share "
                                   "-o; rerun with more --seeds to add seeds), logs each run's final AP to "
                                   "runs.jsonl, then writes summary.md/json (AP at 25/50/75/100% of the budget, "
                                   "queries per object), curves.png and record.json.",
                       epilog="Example: attnlab detr compare --data data/digits --seeds 3 --epochs 24 -o runs/cmp "
                              "--jobs 2 --threads 1")
    _add_train_flags(p)
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds --seed, --seed+1, ... (default 3)")
    add_grid(p, flag="--jobs", what="training run")
    add_out(p, required=True, what="comparison folder")
    p.set_defaults(func=_cmd_compare)


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic

    options = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag, *_ in MAKE_DATA_FLAGS}
    res = make_synthetic(args.out, args.kind, seed=args.seed, overwrite=args.overwrite, **options)
    s = res["splits"]
    emit(args, res, text=f"{args.kind} written to {args.out}: train {s['train']['images']} images / "
                         f"{s['train']['objects']} objects, val {s['val']['images']} / {s['val']['objects']}")
    return 0


def _final_text(run: str, entry: dict) -> str:
    ap = ", ".join(f"{k} {entry[k]}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl") if entry.get(k) is not None)
    qpo = ", ".join(f"{k.split('@')[1]}: {v}" for k, v in entry.items() if k.startswith("queries_per_object"))
    return f"{run}: {ap}\nqueries per object above quality t ({qpo})"


def _cmd_train(args: argparse.Namespace) -> int:
    from .distributed import launched_as_rank0
    from .train import train

    _keep_inputs(args.out, args.data, args.backbone_weights)
    cfg = _train_config(args, args.dac or args.official_dac)
    state = train(cfg, args.out, progress=show_progress(args), quiet=args.quiet, overwrite=args.overwrite)
    if not launched_as_rank0():  # under torchrun every process has the result; one prints it
        return 0
    final = state["history"][-1] if state["history"] else {}
    emit(args, {"run": args.out, "epochs": state["epoch"], "steps": state["step"], "parameters": state["parameters"],
                "final": final, "train_seconds": round(state["train_seconds"], 2)},
         text=f"{_final_text(args.out, final)}\n{state['parameters']:,} parameters")
    return 0


def _eval_command(args: argparse.Namespace) -> str:
    words = ["attnlab", "detr", "eval", args.run]
    words += ["--data", args.data] if args.data else []
    words += ["--split", args.split] if args.split else []
    words += ["--allow-changed-data"] if args.allow_changed_data else []
    words += ["--save-predictions", args.save_predictions] if args.save_predictions else []
    return shlex.join([*words, "-o", args.out])


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..core.outputs import artifact_dir, output_file
    from ..core.records import RunRecord
    from .evaluate import AP_NAMES, write_predictions
    from .train import evaluate_run

    _keep_inputs(args.out, args.run, args.data)
    _keep_inputs(args.save_predictions, args.run, args.data)
    if args.save_predictions:
        output_file(args.save_predictions, args.overwrite)         # refused before the evaluation, not after
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(artifact_dir(args.out, args.overwrite, what="detr evaluation")) if args.out else None
        cfg, state, metrics, detections = evaluate_run(args.run, args.data, args.split, args.allow_changed_data,
                                                       args.device, args.batch_size)
        if args.save_predictions:
            write_predictions(args.save_predictions, detections, args.overwrite)
        if tmp is not None:
            split = args.split or cfg.val_split
            rec = RunRecord(name=f"detr-eval-{Path(args.run).name}", title=f"detr: {args.run} on {split}",
                            command=_eval_command(args), seed=cfg.seed,
                            config={"run": args.run, "data": args.data or cfg.data, "split": split,
                                    "epoch": state["epoch"], "step": state["step"],
                                    "predictions": args.save_predictions, "train": cfg.to_dict()},
                            metrics=metrics)
            rec.add_table(f"COCO bbox metrics on {split}", list(AP_NAMES), [[metrics[k] for k in AP_NAMES]])
            rec.save(tmp / "record.json")
    result = {"run": args.run, "epoch": state["epoch"], "step": state["step"], **metrics,
              "predictions": args.save_predictions, "detections": len(detections)}
    text = _final_text(args.run, metrics)
    if args.save_predictions:
        text += f"\n{len(detections)} detections -> {args.save_predictions}"
    emit(args, result, text=text)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..core.records import RunRecord
    from .predict import predict_files
    from .train import load_run

    _keep_inputs(args.out, args.run, *args.images)
    cfg, model, state = load_run(args.run)
    command = shlex.join(["attnlab", "detr", "predict", args.run, *args.images, "--threshold", str(args.threshold),
                          "-o", args.out])
    rec = RunRecord(name=f"detr-predict-{Path(args.run).name}", title=f"detr: detections of {args.run}",
                    command=command, seed=cfg.seed, config={"run": args.run, "threshold": args.threshold,
                                                            "images": args.images})
    results = predict_files(model, state["names"], cfg.image_size, args.images, args.out, args.threshold,
                            overwrite=args.overwrite, record=rec)
    lines = [f"{r['image']}: {len(r['detections'])} detections -> {r['drawn']}" for r in results]
    emit(args, {"run": args.run, "results": results}, text="\n".join(lines))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_compare

    _keep_inputs(args.out, args.data)
    seeds = list(range(args.seed, args.seed + args.seeds))
    grid = grid_options(args)
    grid["workers"] = grid["workers"] or 1  # no config to fall back to: one run at a time
    summary = run_compare(_train_config(args, dac=False), args.out, seeds, **grid, overwrite=args.overwrite)
    md = (Path(args.out) / "summary.md").read_text(encoding="utf-8")
    emit(args, summary, text=md + f"\ncurves: {Path(args.out) / 'curves.png'}")
    return 0
