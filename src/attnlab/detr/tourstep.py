"""The detr tour: a small synthetic-digits comparison, its curves, and drawn detections of both models."""

from __future__ import annotations

from pathlib import Path


from ..core.plots import plt, save_figure
from ..core.records import RunRecord
from .compare import fmt, run_compare
from .data import open_split
from .predict import detect
from .synthetic import make_synthetic
from .train import TrainConfig, load_run

TOUR_DATA = {"n_train": 1000, "n_val": 200}
TOUR_TRAIN = {"epochs": 30, "eval_every": 5, "batch_size": 32, "lr": 1e-3}
TOUR_JOBS = 2      # baseline and DAC train side by side, one thread each
COMMAND = "attnlab tour --only detr"


def _detections_figure(cmp_dir: Path, data_dir: Path, seed: int, path: Path, n: int = 6) -> Path:
    val = open_split(data_dir, "val")
    ids = val.ids[:n]
    images = [val.load_image(i) for i in ids]
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8))
    for row, variant in enumerate(("baseline", "dac")):
        cfg, model, state = load_run(cmp_dir / f"{variant}-seed{seed}")
        dets = detect(model, images, cfg.image_size, threshold=0.3)
        for ax, im, image_id, det in zip(axes[row], images, ids, dets):
            ax.imshow(im)
            for a in val.coco.imgToAnns[image_id]:
                x, y, w, h = a["bbox"]
                ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec="white", ls="--", lw=1))
            for s, l, (x0, y0, x1, y1) in zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist()):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="red" if variant == "dac" else "tab:blue", lw=1.5))
                ax.text(x0, y0 - 1, f"{state['names'][l]} {s:.2f}", fontsize=6, color="yellow")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel("DAC" if variant == "dac" else "baseline")
    fig.suptitle("val detections (score >= 0.3); dashed white: ground truth")
    return save_figure(fig, path)


def run(out_dir: Path, seed: int = 0) -> RunRecord:
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir, cmp_dir = out_dir / "digits", out_dir / "compare"
    rec = RunRecord(name="detr", title="detr: DETR trained with DAC (C-decoder) vs baseline on synthetic digits",
                    command=COMMAND, seed=seed, config={"data": TOUR_DATA, "train": TOUR_TRAIN})
    with rec.timed("make_data"):
        make_synthetic(data_dir, "synthetic-digits", seed=seed, **TOUR_DATA)
    base = TrainConfig(data=str(data_dir), **TOUR_TRAIN)
    with rec.timed("compare"):
        summary = run_compare(base, cmp_dir, [seed], workers=TOUR_JOBS, threads=1, progress=False)
    rows = [[r["budget"], r["step"], r["variant"], fmt(r["AP"]), fmt(r["AP50"]), fmt(r["AP75"])]
            for r in summary["table"]]
    rec.add_table("COCO AP on val at 25/50/75/100% of the budget (one seed)",
                  ["budget", "step", "variant", "AP", "AP50", "AP75"], rows)
    rec.add_table("Queries per object with quality (0.3 score + 0.7 IoU) above t (O-decoder, val)",
                  ["budget", "variant", "t=0.6", "t=0.7", "t=0.8"],
                  [[r["budget"], r["variant"]] + [round(r[f"queries_per_object@{t}"]["mean"], 3) for t in (0.6, 0.7, 0.8)]
                   for r in summary["table"]])
    for r in summary["table"]:
        if r["budget"] == "100%":
            rec.metrics[f"{r['variant']}_AP"] = round(r["AP"]["mean"], 4)
            rec.metrics[f"{r['variant']}_AP50"] = round(r["AP50"]["mean"], 4)
            rec.metrics[f"{r['variant']}_queries_per_object@0.7"] = round(r["queries_per_object@0.7"]["mean"], 3)
    sp = summary["seconds_per_step"]
    rec.metrics["dac_step_time_ratio"] = round(sp["dac"]["mean"] / sp["baseline"]["mean"], 3)
    rec.add_figure((cmp_dir / "curves.png").resolve(), "AP, AP50, AP75 on val over training, baseline vs DAC.")
    with rec.timed("detections"):
        fig = _detections_figure(cmp_dir, data_dir, seed, out_dir / "detections.png")
    rec.add_figure(fig.resolve(), "Detections of both models on the first val images (blue: baseline, red: DAC).")
    rec.notes.append(f"Tour scale: {TOUR_DATA['n_train']} training images, {TOUR_TRAIN['epochs']} epochs, one seed; "
                     "the committed 3-seed comparison is in docs/detr.md.")
    return rec
