"""Detection on image files with a trained run: boxes, labels and scores, drawn onto PNG copies with PIL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from ..core.atomic import atomic_path
from ..core.errors import AttnlabError
from ..core.outputs import artifact_dir
from ..core.records import RunRecord
from .data import collate, make_transforms, to_model_input
from .evaluate import postprocess
from .model import Detector

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#469990",
           "#808000"]


def read_image(path: str | Path) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise AttnlabError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except OSError as e:
        raise AttnlabError(f"cannot read image {p} ({e}); give a PNG or JPEG file") from None


@torch.no_grad()
def detect(model: Detector, images: list[Image.Image], image_size: int, threshold: float = 0.3,
           device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    """Detections above ``threshold`` per image (boxes in the image's own xyxy pixels)."""
    tf = make_transforms("none", False, image_size)
    batch = []
    for im in images:
        target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
        batch.append(to_model_input(*tf(im, target, None)))
    x, mask, _ = collate(batch)
    out = model.eval()(x.to(device), mask.to(device))
    sizes = torch.tensor([[im.height, im.width] for im in images])
    preds = postprocess(out["logits"][-1].cpu(), out["boxes"][-1].cpu(), sizes)
    return [{k: v[p["scores"] >= threshold] for k, v in p.items()} for p in preds]


def draw_detections(image: Image.Image, det: dict[str, torch.Tensor], names: list[str], path: str | Path,
                    scale: int = 1, truth: list[tuple[str, list[float]]] | None = None) -> Path:
    """Boxes (coloured by class, with name and score) on an upscaled copy; optional ground truth in grey."""
    im = image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image.copy()
    draw = ImageDraw.Draw(im)
    for _, (x0, y0, x1, y1) in truth or []:
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale, y1 * scale), outline="#999999", width=1)
    for s, label, b in zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist(), strict=True):
        x0, y0, x1, y1 = (v * scale for v in b)
        color = PALETTE[label % len(PALETTE)]
        draw.rectangle((x0, y0, x1, y1), outline=color, width=2)
        draw.text((x0 + 2, max(0, y0 - 11)), f"{names[label]} {s:.2f}", fill=color)
    path = Path(path)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def predict_files(model: Detector, names: list[str], image_size: int, paths: list[str], out_dir: str | Path,
                  threshold: float = 0.3, scale: int | None = None, overwrite: bool = False,
                  record: RunRecord | None = None) -> list[dict[str, Any]]:
    """Detect objects in each image file and draw them into ``out_dir/<stem>_detections.png``.

    ``out_dir`` is written in one go: an existing non-empty folder is refused unless ``overwrite``, which
    replaces it whole. With ``record``, the detections are added to it as a table and it is saved as
    ``out_dir/record.json``."""
    stems = [Path(p).stem for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise AttnlabError(f"several images are named {twice[0]!r}; their drawings would overwrite each other "
                           "(predict them in separate runs)")
    results = []
    with artifact_dir(out_dir, overwrite, what="detr detections") as tmp:
        images = [read_image(p) for p in paths]
        for p, im, det in zip(paths, images, detect(model, images, image_size, threshold), strict=True):
            name = f"{Path(p).stem}_detections.png"
            draw_detections(im, det, names, tmp / name, scale or max(1, 256 // max(im.size)))
            found = zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist(), strict=True)
            results.append({"image": str(p), "drawn": str(Path(out_dir) / name), "detections": [
                {"label": names[label], "score": round(sc, 4), "box_xyxy": [round(v, 2) for v in b]}
                for sc, label, b in found]})
        if record is not None:
            record.metrics.update({"images": len(results), "detections": sum(len(r["detections"]) for r in results)})
            record.add_table(f"Detections with score >= {threshold}",
                             ["image", "label", "score", "box (x0, y0, x1, y1), pixels"],
                             [[r["image"], d["label"], d["score"], d["box_xyxy"]]
                              for r in results for d in r["detections"]])
            record.save(tmp / "record.json")
    return results
