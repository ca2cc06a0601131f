"""Save / load a linearized model as a checkpoint that serves as one.

The folder is the base HF checkpoint with the replaced attention weights removed from its safetensors and each
map's W and b added as the weights of the module that takes the attention's place; ``config.json`` gets
``model_type`` :data:`~attnlab.nbl.hub.MODEL_TYPE`, an ``nbl`` entry (what replaced which layer) and an
``auto_map`` naming ``modeling_nbl.py``, a copy of :mod:`attnlab.nbl.hub` shipped in the folder. So
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` (``AutoModel`` for an encoder) loads the
linearized model without attnlab installed, and a plain ``from_pretrained(dir)`` fails with transformers' own
"contains custom code" error instead of serving the dense model. :func:`load` builds the same model from
attnlab's own copy of the classes (no remote code). ``nbl.json`` records how the maps were fitted, on which
calibration text, and the bytes saved. No pickle anywhere.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import current_umask
from ..core.errors import AttnlabError
from ..core.hf import Family, family_of
from ..core.outputs import MARKER, artifact_dir
from ..core.runtime import environment
from . import hub
from .lmmse import AffineMap

NBL_SCHEMA = "attnlab.nbl/2"
MODELING_FILE = "modeling_nbl.py"
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
#: What ``save`` never copies from the base checkpoint: weights (rewritten), NBL's own files, attnlab's bookkeeping.
_NOT_COPIED = {"nbl.json", "nbl.safetensors", MODELING_FILE, WEIGHTS, INDEX, "attnlab-source.json", "record.json",
               MARKER}
KIND = "nbl model"


def _auto_class(config) -> str:
    return "AutoModelForCausalLM" if family_of(config).causal else "AutoModel"


def _base_classes(config_class: type, auto_class: str) -> type:
    import transformers

    return getattr(transformers, auto_class)._model_mapping[config_class]


def _shards(base: Path) -> dict[str, list[str]]:
    """Weights file name -> its tensor names, from the index of a sharded checkpoint or ``model.safetensors``."""
    from safetensors import safe_open

    if (base / INDEX).is_file():
        shards: dict[str, list[str]] = {}
        for name, file in json.loads((base / INDEX).read_text())["weight_map"].items():
            shards.setdefault(file, []).append(name)
        return shards
    if not (base / WEIGHTS).is_file():
        raise AttnlabError(f"{base}: no {WEIGHTS} (attnlab reads safetensors only; re-save the checkpoint with "
                           f"transformers' save_pretrained)")
    with safe_open(str(base / WEIGHTS), framework="pt") as f:
        return {WEIGHTS: list(f.keys())}


def _prefix(names: list[str], fam: Family, base_model_prefix: str) -> str:
    """The prefix the checkpoint puts before the model's own parameter names ("" or e.g. "bert.")."""
    for prefix in ("", base_model_prefix + "."):
        if any(n.startswith(f"{prefix}{fam.layers}.") for n in names):
            return prefix
    raise AttnlabError(f"the checkpoint holds no weights under {fam.layers!r} (nor {base_model_prefix}.{fam.layers}); "
                       f"its weights do not match its config.json")


def removed_paths(fam, method: str) -> tuple[str, ...]:
    """The modules of a layer whose weights a replacement by ``method`` leaves unused."""
    paths = (fam.attention, *fam.bypass)
    return (*paths, fam.mlp, *fam.mlp_bypass) if method == "block" else paths


def nbl_spec(config, replaced: dict[int, str]) -> dict[str, Any]:
    """The ``nbl`` entry of a linearized checkpoint's config: the family's paths and what replaced each layer."""
    fam = family_of(config)
    spec = {"base_model_type": config.model_type, "layers": fam.layers, "attention": fam.attention,
            "bypass": list(fam.bypass), "replaced": {str(i): replaced[i] for i in sorted(replaced)}}
    if "block" in replaced.values():
        spec.update(mlp=fam.mlp, mlp_bypass=list(fam.mlp_bypass))
    return spec


def modeling_source(config_class: type, model_class: type) -> str:
    """``modeling_nbl.py``: :mod:`attnlab.nbl.hub` and the two classes of this family built from it."""
    return (inspect.getsource(hub) + "\n\n# the classes of this checkpoint's family (written by attnlab.nbl.save)\n"
            f"from transformers import {config_class.__name__}, {model_class.__name__}  # noqa: E402\n\n"
            f"NBLConfig, NBLModel = linearized_classes({config_class.__name__}, {model_class.__name__})\n")


def write(folder: str | Path, base_checkpoint: str | Path, maps: list[AffineMap], info: dict[str, Any]) -> Path:
    """Write into the (new, empty) ``folder`` the linearized checkpoint of ``base_checkpoint`` (an HF directory
    with safetensors weights). ``info`` must hold ``method`` and ``layers``; anything else is recorded as given
    in ``nbl.json``, with each map's calibration error and the bytes the removed weights held and the maps hold."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoConfig

    base, folder = Path(base_checkpoint), Path(folder)
    if not (base / "config.json").exists():
        raise AttnlabError(f"{base}: not an HF checkpoint directory (no config.json)")
    if is_linearized(base):
        raise AttnlabError(f"{base}: is already linearized; linearize the base model it was written from")
    config = AutoConfig.from_pretrained(base)
    fam, auto_class = family_of(config), _auto_class(config)
    model_class = _base_classes(type(config), auto_class)
    by_layer = {m.layer: m for m in maps}
    replaced = {int(i): info["method"] for i in info["layers"]}
    if info["method"] == "nbl" and set(by_layer) != set(replaced):
        raise AttnlabError(f"maps for layers {sorted(by_layer)} but layers {sorted(replaced)} replaced")
    shards = _shards(base)
    prefix = _prefix([n for names in shards.values() for n in names], fam, model_class.base_model_prefix)
    doomed = {i: tuple(f"{prefix}{fam.layers}.{i}.{p}." for p in removed_paths(fam, method))
              for i, method in replaced.items()}
    removed_bytes = added_bytes = 0
    found: set[int] = set()
    weight_map: dict[str, str] = {}
    for file, names in shards.items():
        drop = {n: i for n in names for i, starts in doomed.items() if n.startswith(starts)}
        if not drop:  # nothing of a replaced layer here: the shard as it is
            shutil.copy2(base / file, folder / file)
            weight_map.update(dict.fromkeys(names, file))
            continue
        found |= set(drop.values())
        with safe_open(str(base / file), framework="pt") as f:
            tensors = {n: f.get_tensor(n) for n in names if n not in drop}
            removed = [f.get_tensor(n) for n in drop]
        removed_bytes += sum(t.numel() * t.element_size() for t in removed)
        # in the dtype of the weights they replace, as the rest of the checkpoint: the float64 fit rounded once
        dtype = removed[0].dtype
        added = {f"{prefix}{fam.layers}.{i}.{fam.attention}.linear.{part}":
                 torch.tensor(np.ascontiguousarray(getattr(by_layer[i], part)), dtype=dtype)
                 for i in sorted(set(drop.values()) & set(by_layer)) for part in ("weight", "bias")}
        added_bytes += sum(t.numel() * t.element_size() for t in added.values())
        tensors.update(added)
        save_file(tensors, folder / file, metadata={"format": "pt"})
        (folder / file).chmod(0o666 & ~current_umask())  # safetensors writes 0600; a server may run as another user
        weight_map.update(dict.fromkeys(tensors, file))
    missing = sorted(set(replaced) - found)
    if missing:
        raise AttnlabError(f"{base}: no attention weights for layer(s) {missing} in the checkpoint")
    if (base / INDEX).is_file():
        index = json.loads((base / INDEX).read_text())
        index["weight_map"] = dict(sorted(weight_map.items()))
        index.get("metadata", {}).pop("total_size", None)
        (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    for f in base.iterdir():
        if f.name not in _NOT_COPIED and f.name not in shards:
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)
    doc = json.loads((base / "config.json").read_text())
    doc.update(model_type=hub.MODEL_TYPE, architectures=[f"NBL{model_class.__name__}"],
               auto_map={"AutoConfig": "modeling_nbl.NBLConfig", auto_class: "modeling_nbl.NBLModel"},
               nbl=nbl_spec(config, replaced))
    (folder / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    (folder / MODELING_FILE).write_text(modeling_source(type(config), model_class))
    record = {"schema": NBL_SCHEMA, **info,
              "maps": [{"layer": m.layer, "mse": m.mse, "nmse": m.nmse, "ridge": m.ridge} for m in maps],
              "bytes": {"removed": removed_bytes, "added": added_bytes, "saved": removed_bytes - added_bytes},
              "environment": environment()}
    (folder / "nbl.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return folder


def save(out_dir: str | Path, base_checkpoint: str | Path, maps: list[AffineMap], info: dict[str, Any],
         overwrite: bool = False) -> Path:
    """:func:`write` a linearized model to ``out_dir`` in one go: an existing non-empty folder is refused
    unless ``overwrite``, which replaces it whole (no file of the old folder survives)."""
    with artifact_dir(out_dir, overwrite, what=KIND) as tmp:
        write(tmp, base_checkpoint, maps, info)
    return Path(out_dir)


def is_linearized(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save` (or an older ``attnlab nbl apply``)."""
    return (Path(path) / "nbl.json").is_file()


def read_info(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    f = path / "nbl.json"
    if not f.exists():
        raise AttnlabError(f"{path}: no nbl.json (not a directory written by `attnlab nbl apply`)")
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AttnlabError(f"{f}: not valid JSON ({e}); write the folder again with `attnlab nbl apply`") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == "attnlab.nbl/1":
        raise AttnlabError(f"{path}: written by an older attnlab (the dense checkpoint plus side-cars); write it "
                           f"again with `attnlab nbl apply`")
    if schema != NBL_SCHEMA:
        raise AttnlabError(f"{f}: unknown schema {schema!r} (expected {NBL_SCHEMA})")
    return doc


def load(path: str | Path, dtype: str = "float32", **options):
    """The linearized transformers model saved in ``path`` (eval mode), ready for ``generate()``: the
    checkpoint's own classes (:mod:`attnlab.nbl.hub`) with the base config, so every attnlab function that
    asks ``core/hf.py`` about the family serves it; no remote code runs. ``options`` go to ``from_pretrained``
    (e.g. ``device_map``)."""
    from transformers import CONFIG_MAPPING
    from transformers.utils import logging as hf_logging

    from ..core.runtime import torch_dtype

    hf_logging.disable_progress_bar()
    path = Path(path)
    read_info(path)  # refuse a plain checkpoint before loading weights
    try:
        doc = json.loads((path / "config.json").read_text(encoding="utf-8"))
        spec = doc["nbl"]
        config_class = CONFIG_MAPPING[spec["base_model_type"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AttnlabError(f"{path}/config.json: not the config of a linearized checkpoint ({type(e).__name__}: "
                           f"{e}); write the folder again with `attnlab nbl apply`") from None
    config = config_class.from_dict({k: v for k, v in doc.items() if k not in ("model_type", "auto_map")})
    model_class = hub.linearized_model_class(_base_classes(config_class, _auto_class(config)))
    return model_class.from_pretrained(path, config=config, dtype=torch_dtype(dtype), **options).eval()


def load_tokenizer(path: str | Path, model):
    """The tokenizer saved in a linearized checkpoint, given the model :func:`load` returned (whose config
    stands in for ``config.json``, which names remote code)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path), config=model.config)
