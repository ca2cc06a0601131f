"""Save / load a linearized model as one self-contained directory: the unmodified HF checkpoint, plus
``nbl.json`` (what was replaced, how, on which calibration text) and ``nbl.safetensors`` (W, b).

Plain transformers loads the directory as the original model; :func:`load` returns the linearized one.
No pickle anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import AttnlabError
from ..core.outputs import MARKER, artifact_dir
from ..core.runtime import environment
from .lmmse import AffineMap
from .replace import apply

NBL_SCHEMA = "attnlab.nbl/1"


#: What ``save`` never copies from the base checkpoint: NBL's own files and attnlab's bookkeeping.
_NOT_COPIED = {"nbl.json", "nbl.safetensors", "attnlab-source.json", "record.json", MARKER}
KIND = "nbl model"


def write(folder: str | Path, base_checkpoint: str | Path, maps: list[AffineMap], info: dict[str, Any]) -> Path:
    """Write into the (new, empty) ``folder``: a copy of ``base_checkpoint`` (an HF directory), ``nbl.json``
    and ``nbl.safetensors``. ``info`` must hold ``method`` and ``layers``; anything else is recorded as given."""
    from safetensors.torch import save_file

    base, folder = Path(base_checkpoint), Path(folder)
    if not (base / "config.json").exists():
        raise AttnlabError(f"{base}: not an HF checkpoint directory (no config.json)")
    for f in base.iterdir():
        if f.is_file() and f.name not in _NOT_COPIED:
            shutil.copy2(f, folder / f.name)
    tensors = {}
    for m in maps:
        tensors[f"layer.{m.layer}.weight"] = torch.from_numpy(np.ascontiguousarray(m.weight))
        tensors[f"layer.{m.layer}.bias"] = torch.from_numpy(np.ascontiguousarray(m.bias))
    save_file(tensors, folder / "nbl.safetensors")
    doc = {"schema": NBL_SCHEMA, **info, "maps": [{"layer": m.layer, "mse": m.mse, "nmse": m.nmse, "ridge": m.ridge}
                                                  for m in maps], "environment": environment()}
    (folder / "nbl.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return folder


def save(out_dir: str | Path, base_checkpoint: str | Path, maps: list[AffineMap], info: dict[str, Any],
         overwrite: bool = False) -> Path:
    """:func:`write` a linearized model to ``out_dir`` in one go: an existing non-empty folder is refused
    unless ``overwrite``, which replaces it whole (no file of the old folder survives)."""
    with artifact_dir(out_dir, overwrite, what=KIND) as tmp:
        write(tmp, base_checkpoint, maps, info)
    return Path(out_dir)


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
    if schema != NBL_SCHEMA:
        raise AttnlabError(f"{f}: unknown schema {schema!r} (expected {NBL_SCHEMA})")
    return doc


def read_maps(path: str | Path, info: dict[str, Any]) -> list[AffineMap]:
    from safetensors.torch import load_file

    f = Path(path) / "nbl.safetensors"
    try:
        tensors = load_file(str(f))
        return [AffineMap(m["layer"], tensors[f"layer.{m['layer']}.weight"].numpy(),
                          tensors[f"layer.{m['layer']}.bias"].numpy(), m["mse"], m["nmse"], m["ridge"])
                for m in info["maps"]]
    except (OSError, KeyError, TypeError) as e:
        raise AttnlabError(f"{f}: missing or damaged maps ({type(e).__name__}: {e})") from None
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise AttnlabError(f"{f}: not a readable safetensors file ({e})") from None


def linearize_loaded(model, path: str | Path):
    """Apply the replacements recorded in ``path`` to ``model`` (loaded from the same directory)."""
    info = read_info(path)
    if info["method"] == "nbl":
        return apply(model, read_maps(path, info))
    return apply(model, method=info["method"], layers=info["layers"])


def load(path: str | Path, dtype: str = "float32"):
    """The linearized transformers model saved in ``path`` (eval mode), ready for ``generate()``."""
    from ..core.hf import load_model

    read_info(path)  # refuse a plain checkpoint before loading weights
    return linearize_loaded(load_model(path, dtype), path)
