"""COCO-format detection data: a validated loader for any COCO folder (pycocotools), DETR-standard
augmentations in PIL/torch (flip, multi-scale resize, random crop) and padded batches with masks.

A dataset folder holds ``annotations/instances_<split>.json`` and the images in ``<split>/``
(COCO itself: ``--train-split train2017 --val-split val2017``). As in DETR, evaluation scores against the
annotation file as it is (``CocoDetection.coco`` is pycocotools' index of it), and only the training
targets are cleaned: category ids are remapped to contiguous labels, crowd boxes are not trained on, boxes
are clipped to the image file and empty ones skipped with one counted warning. A file that pycocotools
cannot evaluate (ids that are not unique integers, a box that is not four numbers, no area or iscrowd) is
refused in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..core.errors import AttnlabError
from .box_ops import xyxy_to_cxcywh
from .variants import AUGMENTATIONS

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
FIX = "fix the file"


def _read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed annotation file, checked to be one that pycocotools' COCOeval can score (raises otherwise)."""
    if not path.is_file():
        raise AttnlabError(f"annotation file not found: {path} (expected annotations/instances_<split>.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AttnlabError(f"{path}: malformed COCO JSON ({e}); regenerate or fix the file") from None
    if not isinstance(data, dict):
        raise AttnlabError(f"{path}: a COCO file is a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AttnlabError(f"{path}: missing or non-list {key!r} (a COCO file needs images, annotations, "
                               "categories)")
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise AttnlabError(f"{path}: entry {i} of {key!r} is {entry!r}, not a JSON object ({FIX})")
    if not data["categories"]:
        raise AttnlabError(f"{path}: empty 'categories' list (a detector needs at least one class)")
    for section, keys in (("images", ("id",)), ("categories", ("id",)),
                          ("annotations", ("id", "image_id", "category_id"))):
        _check_ids(path, section, data[section], keys)
    for im in data["images"]:
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            raise AttnlabError(f"{path}: image {im['id']} has file_name {name!r}; every image needs the name of "
                               f"its file ({FIX})")
        for key in ("width", "height"):
            if type(im.get(key)) is not int or im[key] < 1:
                raise AttnlabError(f"{path}: image {im['id']} has {key} {im.get(key)!r}; COCO sizes are positive "
                                   f"integers in pixels ({FIX})")
    for c in data["categories"]:
        if not isinstance(c.get("name"), str):
            raise AttnlabError(f"{path}: category {c['id']} has name {c.get('name')!r}; every category needs a "
                               f"name ({FIX})")
    for a in data["annotations"]:
        _check_annotation(path, a)
    return data


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_annotation(path: Path, a: dict[str, Any]) -> None:
    """What COCOeval reads of a ground-truth box: ``bbox`` (IoU), ``area`` (the size buckets), ``iscrowd``."""
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
        raise AttnlabError(f"{path}: annotation {a['id']} has bbox {bbox!r}; a COCO box is [x, y, width, height], "
                           f"four finite numbers ({FIX})")
    if not _number(a.get("area")) or a["area"] < 0:
        raise AttnlabError(f"{path}: annotation {a['id']} has area {a.get('area')!r}; COCOeval needs every box's "
                           f"area (a non-negative number: the mask's pixels, or width x height) ({FIX})")
    if a.get("iscrowd") not in (0, 1) or type(a["iscrowd"]) is not int:
        raise AttnlabError(f"{path}: annotation {a['id']} has iscrowd {a.get('iscrowd')!r}; COCOeval needs 0 (an "
                           f"object) or 1 (a crowd region) ({FIX})")


def _check_ids(path: Path, section: str, entries: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """COCO ids are integers (pycocotools indexes by them: 3, "3" and 3.0 are different keys), and each
    entry's own ``id`` is unique in its section (a duplicate image id would merge two images silently)."""
    seen: set[int] = set()
    for entry in entries:
        for key in keys:
            value = entry.get(key)
            if type(value) is not int:
                raise AttnlabError(f"{path}: {key} {value!r} in {section!r} is not an integer; COCO ids are "
                                   f"integers ({FIX})")
        if entry["id"] in seen:
            raise AttnlabError(f"{path}: id {entry['id']} appears twice in {section!r}; COCO ids are unique ({FIX})")
        seen.add(entry["id"])


def _clean_box(bbox: list[float], width: int, height: int) -> list[float] | None:
    """A training box: ``[x, y, w, h]`` as xyxy clipped to the image, or None when empty (DETR's
    ``ConvertCocoPolysToMask``; with at least a pixel per side, as the boxes are scaled down later)."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return [x0, y0, x1, y1]


def _file_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image file's header (the pixels are not decoded)."""
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise AttnlabError(f"cannot read image {path} ({e}); replace or remove it") from None


class CocoDetection(torch.utils.data.Dataset):
    """One split of a COCO-format folder. ``self.coco`` is pycocotools' index of the annotation file as it is
    (the ground truth COCOeval scores against); the training targets are the cleaned boxes of each image."""

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms: Callable | None = None,
                 cache: bool | None = None, seed: int = 0):
        from pycocotools.coco import COCO

        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        data = _read_coco_json(self.ann_file)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in cats]
        self.names = [c["name"] for c in cats]
        self.cat_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
        images = {im["id"]: im for im in data["images"]}
        missing = [im["file_name"] for im in images.values() if not (self.image_dir / im["file_name"]).is_file()]
        if missing:
            raise AttnlabError(f"{len(missing)} image file(s) listed in {self.ann_file} are missing under "
                               f"{self.image_dir} (first: {missing[0]}); fix the folder or the JSON")
        self.sizes = {i: _file_size(self.image_dir / im["file_name"]) for i, im in images.items()}
        wrong = [i for i, im in images.items() if self.sizes[i] != (im["width"], im["height"])]
        if wrong:
            im = images[wrong[0]]
            warnings.warn(f"{self.ann_file}: {len(wrong)} image(s) whose width/height differ from the image file "
                          f"(first: {im['file_name']}, {im['width']}x{im['height']} in the JSON, "
                          "{}x{} in the file); training clips boxes to the file".format(*self.sizes[wrong[0]]),
                          stacklevel=2)
        self.targets: dict[int, list[tuple[list[float], int]]] = {i: [] for i in images}
        self.skipped_boxes = 0
        for a in data["annotations"]:
            if a["image_id"] not in images:
                raise AttnlabError(f"{self.ann_file}: annotation {a['id']} refers to unknown image_id {a['image_id']}")
            if a["category_id"] not in self.cat_to_label:
                raise AttnlabError(f"{self.ann_file}: annotation {a['id']} has unknown category_id {a['category_id']}")
            if a["iscrowd"]:
                continue
            box = _clean_box(a["bbox"], *self.sizes[a["image_id"]])
            if box is None:
                self.skipped_boxes += 1
            else:
                self.targets[a["image_id"]].append((box, self.cat_to_label[a["category_id"]]))
        if self.skipped_boxes:
            warnings.warn(f"{self.ann_file}: {self.skipped_boxes} empty or out-of-image box(es) not trained on "
                          "(COCOeval still scores against them)", stacklevel=2)
        if not any(self.targets.values()):
            raise AttnlabError(f"{self.ann_file}: no usable (non-crowd) annotations; a detector needs labelled boxes")
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.ids = sorted(images)
        self.transforms = transforms
        self.seed, self.epoch = seed, 0
        use_cache = cache if cache is not None else len(self.ids) <= 20000
        self._cache: dict[int, Image.Image] | None = {} if use_cache else None

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> Image.Image:
        if self._cache is not None and image_id in self._cache:
            return self._cache[image_id]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as e:
            raise AttnlabError(f"cannot read image {path} ({e}); replace or remove it") from None
        if self._cache is not None:
            self._cache[image_id] = img
        return img

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_id = self.ids[index]
        img = self.load_image(image_id)
        boxes = [box for box, _ in self.targets[image_id]]
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor([label for _, label in self.targets[image_id]], dtype=torch.long),
                  "image_id": torch.tensor(image_id), "orig_size": torch.tensor([img.height, img.width])}
        if self.transforms is not None:
            # Augmentation randomness is a function of (seed, epoch, index): resumable and worker-independent.
            img, target = self.transforms(img, target, np.random.default_rng([self.seed, self.epoch, index]))
        return to_model_input(img, target)


def annotation_file(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / "annotations" / f"instances_{split}.json"


def open_split(data_dir: str | Path, split: str, transforms: Callable | None = None, seed: int = 0) -> CocoDetection:
    root = Path(data_dir)
    if not root.is_dir():
        raise AttnlabError(f"no dataset folder {root} (make one: attnlab detr make-data synthetic-digits -o {root})")
    return CocoDetection(root / split, annotation_file(root, split), transforms, seed=seed)


def fingerprint(data_dir: str | Path, split: str) -> dict[str, Any]:
    """Size and SHA-256 of a split's annotation file. A run records them for its splits, so that evaluating
    it on annotations that changed since (a regenerated dataset, an edited file) is noticed, not silent."""
    path = annotation_file(data_dir, split)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise AttnlabError(f"annotation file not found: {path} (expected annotations/instances_<split>.json)") \
            from None
    return {"file": f"annotations/{path.name}", "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def to_model_input(img: Image.Image, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Normalised image tensor; boxes as cxcywh normalised by the (augmented) image size."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - MEAN) / STD
    w, h = img.size
    boxes = xyxy_to_cxcywh(target["boxes"]) / torch.tensor([w, h, w, h], dtype=torch.float32)
    return x, {**target, "boxes": boxes, "size": torch.tensor([h, w])}


# --- augmentations: (PIL image, target with absolute xyxy boxes, numpy Generator) -> same ------------------

def hflip(img: Image.Image, target: dict[str, Tensor]) -> tuple[Image.Image, dict[str, Tensor]]:
    w = img.width
    b = target["boxes"]
    flipped = torch.stack((w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]), 1)
    return img.transpose(Image.FLIP_LEFT_RIGHT), {**target, "boxes": flipped}


def resize(img: Image.Image, target: dict[str, Tensor], size: int, max_size: int | None = None):
    """Shorter side to ``size`` unless the longer side would exceed ``max_size`` (DETR's rule)."""
    w, h = img.size
    short, long = min(w, h), max(w, h)
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    nw, nh = (size, int(round(size * h / w))) if w <= h else (int(round(size * w / h)), size)
    if (nw, nh) == (w, h):
        return img, target
    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h])
    return img.resize((nw, nh), Image.BILINEAR), {**target, "boxes": target["boxes"] * scale}


def crop(img: Image.Image, target: dict[str, Tensor], top: int, left: int, height: int, width: int):
    """Crop and clip boxes; boxes left with no area are dropped."""
    b = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
    b = torch.min(b.reshape(-1, 2, 2), torch.tensor([width, height], dtype=torch.float32)).clamp(min=0).reshape(-1, 4)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return (img.crop((left, top, left + width, top + height)),
            {**target, "boxes": b[keep], "labels": target["labels"][keep]})


class Compose:
    def __init__(self, steps: list[Callable]):
        self.steps = steps

    def __call__(self, img, target, rng):
        for step in self.steps:
            img, target = step(img, target, rng)
        return img, target


def random_hflip(p: float = 0.5) -> Callable:
    return lambda img, t, rng: hflip(img, t) if rng.random() < p else (img, t)


def random_resize(sizes: list[int], max_size: int | None) -> Callable:
    if len(sizes) == 1:
        return lambda img, t, rng: resize(img, t, sizes[0], max_size)
    return lambda img, t, rng: resize(img, t, int(sizes[rng.integers(len(sizes))]), max_size)


def random_size_crop(min_size: int, max_size: int) -> Callable:
    def step(img, t, rng):
        w = int(rng.integers(min(img.width, min_size), min(img.width, max_size) + 1))
        h = int(rng.integers(min(img.height, min_size), min(img.height, max_size) + 1))
        return crop(img, t, int(rng.integers(img.height - h + 1)), int(rng.integers(img.width - w + 1)), h, w)

    return step


def random_select(a: Callable, b: Callable, p: float = 0.5) -> Callable:
    return lambda img, t, rng: a(img, t, rng) if rng.random() < p else b(img, t, rng)


def make_transforms(augment: str, train: bool, base_size: int) -> Callable:
    """DETR's recipe scaled to ``base_size`` (800 for COCO): shorter side in 480..800 step 32 (max 1333),
    or resize to 400..600 then crop 384..600 then resize. "detr" adds horizontal flip; "scale" omits it
    (digits are not mirror-symmetric); "none" and eval only resize to ``base_size``."""
    if augment not in AUGMENTATIONS:
        raise AttnlabError(f"unknown augmentation {augment!r} (choose one of {', '.join(AUGMENTATIONS)})")
    f = base_size / 800
    max_size = int(round(1333 * f))
    if not train or augment == "none":
        return random_resize([base_size], max_size)
    scales = sorted({max(8, int(round(s * f))) for s in range(480, 801, 32)})
    steps = [random_select(random_resize(scales, max_size),
                           Compose([random_resize([max(8, int(round(s * f))) for s in (400, 500, 600)], None),
                                    random_size_crop(max(8, int(round(384 * f))), max(8, int(round(600 * f)))),
                                    random_resize(scales, max_size)]))]
    if augment == "detr":
        steps.insert(0, random_hflip())
    return Compose(steps)


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """Pad images to the largest in the batch: ``images [B, 3, H, W]``, ``mask [B, H, W]`` (True = padding)."""
    h = max(x.shape[1] for x, _ in batch)
    w = max(x.shape[2] for x, _ in batch)
    images = torch.zeros(len(batch), 3, h, w)
    mask = torch.ones(len(batch), h, w, dtype=torch.bool)
    for i, (x, _) in enumerate(batch):
        images[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, : x.shape[1], : x.shape[2]] = False
    return images, mask, [t for _, t in batch]
