"""Save / load a linearized model as one self-contained directory: the unmodified HF checkpoint, plus
``nbl.json`` (what was replaced, how, on which calibration text) and ``nbl.safetensors`` (W, b).

Plain transformers loads the directory as the original model; :func:`load` returns the linearized one.
No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import AttnlabError
from ..core.runtime import environment
from .apply import apply
from .fit import AffineMap

NBL_SCHEMA = "attnlab.nbl/1"


def save(out_dir: str | Path, base_checkpoint: str | Path, maps: list[AffineMap], info: dict[str, Any]) -> Path:
    """Write ``out_dir`` atomically: a copy of ``base_checkpoint`` (an HF directory), ``nbl.json`` and
    ``nbl.safetensors``. ``info`` must hold ``method`` and ``layers``; anything else is recorded as given."""
    from safetensors.torch import save_file

    base = Path(base_checkpoint)
    if not (base / "config.json").exists():
        raise AttnlabError(f"{base}: not an HF checkpoint directory (no config.json)")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "nbl.json").exists():
        raise AttnlabError(f"{out} exists and is not an attnlab NBL directory; choose another -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for f in base.iterdir():
            if f.is_file() and f.name not in ("nbl.json", "nbl.safetensors", "attnlab-source.json"):
                shutil.copy2(f, tmp / f.name)
        tensors = {}
        for m in maps:
            tensors[f"layer.{m.layer}.weight"] = torch.from_numpy(np.ascontiguousarray(m.weight))
            tensors[f"layer.{m.layer}.bias"] = torch.from_numpy(np.ascontiguousarray(m.bias))
        save_file(tensors, tmp / "nbl.safetensors")
        doc = {"schema": NBL_SCHEMA, **info, "maps": [{"layer": m.layer, "mse": m.mse, "nmse": m.nmse, "ridge": m.ridge}
                                                      for m in maps], "environment": environment()}
        (tmp / "nbl.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_info(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    f = path / "nbl.json"
    if not f.exists():
        raise AttnlabError(f"{path}: no nbl.json (not a directory written by `attnlab nbl apply`)")
    doc = json.loads(f.read_text())
    if doc.get("schema") != NBL_SCHEMA:
        raise AttnlabError(f"{f}: unknown schema {doc.get('schema')!r} (expected {NBL_SCHEMA})")
    return doc


def read_maps(path: str | Path, info: dict[str, Any]) -> list[AffineMap]:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(path) / "nbl.safetensors"))
    return [AffineMap(m["layer"], tensors[f"layer.{m['layer']}.weight"].numpy(), tensors[f"layer.{m['layer']}.bias"].numpy(),
                      m["mse"], m["nmse"], m["ridge"]) for m in info["maps"]]


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
