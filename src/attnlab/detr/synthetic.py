"""Synthetic detection benchmarks written as real COCO JSON + PNG files: multi-object scenes composed from
scikit-learn's bundled 8x8 digits (10 classes) or procedural shapes (3 classes). Train and val scenes use
disjoint digit samples, so val measures generalisation to unseen handwriting."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..core.atomic import atomic_write_json
from ..core.errors import AttnlabError
from ..core.outputs import artifact_dir
from .variants import DATASETS

SHAPES = ("rectangle", "ellipse", "triangle")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images with values 0-16, and their labels), read from the CSV file
    the package ships: the same arrays as ``sklearn.datasets.load_digits()``, without importing sklearn
    (which takes seconds)."""
    from importlib import metadata

    try:
        path = next(f for f in metadata.files("scikit-learn") or [] if f.as_posix().endswith("data/digits.csv.gz"))
    except (metadata.PackageNotFoundError, StopIteration):
        raise AttnlabError("scikit-learn's digits data not found (pip install scikit-learn)") from None
    with gzip.open(path.locate()) as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def _digit_pools() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, target = load_digits()
    val = np.arange(len(target)) % 5 == 4          # fixed split of the 1,797 samples: 1/5 for val scenes
    return images[~val], target[~val], images[val], target[val]


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], max_iou: float) -> bool:
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in boxes:
        inter = max(0, min(x1, a1) - max(x0, a0)) * max(0, min(y1, b1) - max(y0, b0))
        union = (x1 - x0) * (y1 - y0) + (a1 - a0) * (b1 - b0) - inter
        if inter / union > max_iou:
            return True
    return False


def _digit_patch(img8: np.ndarray, size: int) -> np.ndarray:
    patch = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(patch, dtype=np.float32)


def _shape_patch(kind: int, w: int, h: int, level: int) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    if SHAPES[kind] == "rectangle":
        draw.rectangle((0, 0, w - 1, h - 1), fill=level)
    elif SHAPES[kind] == "ellipse":
        draw.ellipse((0, 0, w - 1, h - 1), fill=level)
    else:
        draw.polygon(((w - 1) / 2, 0, w - 1, h - 1, 0, h - 1), fill=level)
    return np.asarray(im, dtype=np.float32)


def _scene(rng: np.random.Generator, kind: str, pool: tuple[np.ndarray, np.ndarray], cfg: dict[str, Any]):
    size = cfg["image_size"]
    canvas = rng.normal(0, cfg["noise"], (size, size)).clip(0, None).astype(np.float32)
    boxes: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(int(rng.integers(cfg["min_objects"], cfg["max_objects"] + 1))):
        for _attempt in range(50):
            s = int(rng.integers(cfg["min_size"], cfg["max_size"] + 1))
            if kind == "synthetic-digits":
                i = int(rng.integers(len(pool[1])))
                patch, label = _digit_patch(pool[0][i], s), int(pool[1][i])
            else:
                label = int(rng.integers(len(SHAPES)))
                w = max(4, int(s * rng.uniform(0.7, 1.3)))
                patch = _shape_patch(label, min(w, size), s, int(rng.integers(120, 256)))
            ys, xs = np.nonzero(patch > 40)
            if len(xs) == 0:
                continue
            ph, pw = patch.shape
            ox, oy = int(rng.integers(0, size - pw + 1)), int(rng.integers(0, size - ph + 1))
            box = (ox + int(xs.min()), oy + int(ys.min()), ox + int(xs.max()) + 1, oy + int(ys.max()) + 1)
            if _overlaps(box, boxes, cfg["max_overlap"]):
                continue
            canvas[oy:oy + ph, ox:ox + pw] = np.maximum(canvas[oy:oy + ph, ox:ox + pw], patch)
            boxes.append(box)
            objects.append((label, box))
            break
    return Image.fromarray(canvas.clip(0, 255).astype(np.uint8), mode="L"), objects


DEFAULTS = {"n_train": 4000, "n_val": 500, "image_size": 48, "min_objects": 1, "max_objects": 3,
            "min_size": 10, "max_size": 18, "max_overlap": 0.1, "noise": 12.0}


def make_synthetic(out_dir: str | Path, kind: str = "synthetic-digits", seed: int = 0, overwrite: bool = False,
                   **overrides: Any) -> dict[str, Any]:
    """Write ``out_dir/{train,val}/*.png`` and ``out_dir/annotations/instances_{train,val}.json``.

    The folder is written aside and swapped in when complete: an existing non-empty ``out_dir`` is refused
    unless ``overwrite``, which replaces it whole (no image of an older dataset survives)."""
    if kind not in DATASETS:
        raise AttnlabError(f"unknown synthetic dataset {kind!r} (choose one of {', '.join(DATASETS)})")
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise AttnlabError(f"unknown generator option(s) {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    cfg = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    if not 1 <= cfg["min_objects"] <= cfg["max_objects"]:
        raise AttnlabError("need 1 <= min_objects <= max_objects")
    if not 4 <= cfg["min_size"] <= cfg["max_size"] <= cfg["image_size"]:
        raise AttnlabError("need 4 <= min_size <= max_size <= image_size")
    if kind == "synthetic-digits":
        tr_x, tr_y, va_x, va_y = _digit_pools()
        pools = {"train": (tr_x, tr_y), "val": (va_x, va_y)}
        names = [str(i) for i in range(10)]
    else:
        pools = {"train": (np.zeros(0), np.zeros(0)), "val": (np.zeros(0), np.zeros(0))}
        names = list(SHAPES)
    categories = [{"id": i + 1, "name": n, "supercategory": kind} for i, n in enumerate(names)]
    counts = {}
    with artifact_dir(out_dir, overwrite, what="detr dataset") as tmp:
        for split, n, offset in (("train", cfg["n_train"], 0), ("val", cfg["n_val"], 1)):
            rng = np.random.default_rng([seed, offset])
            (tmp / split).mkdir()
            images, annotations = [], []
            for i in range(n):
                img, objects = _scene(rng, kind, pools[split], cfg)
                name = f"{i:06d}.png"
                img.save(tmp / split / name, format="PNG")
                images.append({"id": i + 1, "file_name": name, "width": img.width, "height": img.height})
                for label, (x0, y0, x1, y1) in objects:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                        "iscrowd": 0})
            atomic_write_json(tmp / "annotations" / f"instances_{split}.json",
                              {"info": {"description": f"attnlab {kind} ({split})", "generator": cfg, "seed": seed},
                               "images": images, "annotations": annotations, "categories": categories})
            counts[split] = {"images": len(images), "objects": len(annotations)}
    return {"dataset": str(out_dir), "kind": kind, "seed": seed, "config": cfg, "splits": counts}
