"""What the CLI and the tour share: a loaded model with its calibration statistics, cached on disk.

Statistics are cached under ``cache_dir()/nbl``, keyed by the model fingerprint, the calibration text
and settings, and the version of the code that computes them (:func:`code_version`), so ``rank`` then
``apply`` collect once, an interrupted collection resumes, and nothing stale is ever reused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import AttnlabError
from ..core.hf import load_model, load_tokenizer
from ..core.models import cache_dir, checkpoint_dir
from .data import blocks_from_source
from .io import is_linearized, load
from .io import load_tokenizer as load_linearized_tokenizer
from .registry import Calibration
from .stats import Stats, collect, fingerprint

#: The sources (under ``attnlab/``) whose code decides what a statistics folder holds.
STATS_CODE = ("nbl/stats.py", "nbl/data.py", "core/hf.py", "core/text.py")


def code_version() -> str:
    """A digest of the code that computes statistics (:data:`STATS_CODE`) and of the torch and
    transformers versions that run the model: part of every cache key."""
    from .. import __version__
    from ..core.runtime import package_version

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(__version__.encode())
    for rel in STATS_CODE:
        h.update((root / rel).read_bytes())
    for package in ("torch", "transformers"):
        h.update(str(package_version(package)).encode())
    return h.hexdigest()[:12]


def dispatch_options(device_map: str | None, max_memory: dict[str, str] | None = None,
                     offload_folder: str | None = None) -> dict:
    """The ``from_pretrained`` keywords that spread a model over devices (accelerate's big-model inference):
    empty without ``device_map``; ``max_memory`` keys are GPU indices, ``cpu`` or ``mps``."""
    if device_map is None:
        if max_memory or offload_folder:
            raise AttnlabError("--max-memory and --offload-folder need --device-map auto")
        return {}
    if device_map != "auto":
        raise AttnlabError(f"unknown device map {device_map!r} (use --device-map auto)")
    from ..core.runtime import package_version

    if package_version("accelerate") is None:
        raise AttnlabError("--device-map auto needs accelerate (pip install accelerate)")
    options: dict = {"device_map": "auto"}
    if max_memory:
        options["max_memory"] = {int(k) if k.isdigit() else k: v for k, v in max_memory.items()}
    if offload_folder:
        options["offload_folder"] = str(offload_folder)
    return options


@dataclass
class Session:
    spec: str
    model: object
    tokenizer: object
    fingerprint: str
    #: the torch device the model runs on and its compute dtype (``--device`` / ``--dtype``); the dtype is in
    #: the model's config, hence in its fingerprint, so statistics of one dtype are never reused for another
    device: str = "cpu"
    dtype: str = "float32"
    #: ``device_map`` etc. for a model spread over several devices (``--device-map auto``: :func:`dispatch_options`)
    #: and ``stats_device``, as :meth:`open` was given them (the keywords that open the same session again)
    placement: dict = field(default_factory=dict)
    #: (calibration, path) -> (statistics, blocks) already loaded or collected in this process
    loaded: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, spec: str, device: str = "cpu", dtype: str = "float32", device_map: str | None = None,
             max_memory: dict[str, str] | None = None, offload_folder: str | None = None,
             stats_device: str | None = None) -> Session:
        """``spec`` loaded in ``dtype`` on ``device`` (a string :func:`~attnlab.core.runtime.choose_device` gave),
        or, with ``device_map="auto"``, spread by accelerate over the GPUs, the CPU and ``offload_folder`` within
        ``max_memory`` (device -> size, e.g. {"0": "70GiB", "cpu": "100GiB"}); a folder written by ``nbl apply``
        loads as the linearized model. ``stats_device`` ("cpu") keeps the statistics there instead of on each
        layer's device (:func:`~attnlab.nbl.stats.collect`)."""
        options = dispatch_options(device_map, max_memory, offload_folder)
        try:
            if is_linearized(spec):
                model = load(spec, dtype, **options)
                tokenizer = load_linearized_tokenizer(spec, model)
            else:
                model, tokenizer = load_model(spec, dtype, **options), load_tokenizer(spec)
        except ValueError as e:
            if not options:
                raise
            # accelerate's refusals (no room, disk offload without a folder) are the user's settings to change
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AttnlabError(f"--device-map auto: {first[:200]} (raise --max-memory or give --offload-folder)") \
                from None
        if not options:
            model = model.to(device)
        placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder,
                     "stats_device": stats_device}
        return cls(str(spec), model, tokenizer, fingerprint(model), device, dtype,
                   {k: v for k, v in placement.items() if v is not None})

    @property
    def checkpoint(self) -> Path:
        return checkpoint_dir(self.spec)

    def blocks(self, source: str, split: str, tokens: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
        """Token blocks of ``split`` of ``source`` (:func:`~attnlab.nbl.data.blocks_from_source`)."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and seq_len > limit:
            raise AttnlabError(f"--seq-len {seq_len} exceeds the model's {limit} positions")
        return blocks_from_source(self.tokenizer, source, split, seq_len, tokens, seed)

    def cache_path(self, info: dict, calib: Calibration) -> Path:
        """Where the statistics of this model on ``calib`` (described by ``info``) are cached."""
        key = json.dumps([self.fingerprint, code_version(), info, calib.batch_size], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return cache_dir() / "nbl" / f"stats-{self.fingerprint}-{digest}"

    def stats(self, calib: Calibration, path: str | Path | None = None, progress: bool = True,
              quiet: bool = False, fresh: bool = False) -> tuple[Stats, torch.Tensor]:
        """Statistics over the calibration split and the calibration blocks: loaded from ``path`` (default:
        the cache), resumed when that file is partial (one line on stderr unless ``quiet``), or collected.
        ``fresh`` ignores what ``path`` holds and collects again. A second call in the same session returns
        the same objects (with the scores already computed on them), as does a call with the path the first
        resolved to (``stats.meta["path"]``)."""
        key = (calib, None if path is None else str(path))
        if key in self.loaded and not fresh:
            return self.loaded[key]
        blocks, info = self.blocks(calib.source, "calibration", calib.tokens, calib.seq_len, calib.seed)
        path = Path(path) if path is not None else self.cache_path(info, calib)
        n_batches = (len(blocks) + calib.batch_size - 1) // calib.batch_size
        stats = None
        if fresh and Stats.peek(path) is not None:  # replaced: no layer of the old statistics may be resumed
            Stats.discard(path)
        if path.exists() and not fresh:
            stats = Stats.load(path, fingerprint=self.fingerprint)
            if stats.meta.get("calibration") != info:
                raise AttnlabError(f"{path}: collected on other calibration text ({stats.meta.get('calibration')}); "
                                   f"remove it or give another --stats path")
            done = stats.meta.get("batches_done", 0)
            if done < n_batches and not quiet:
                print(f"attnlab: resuming the statistics in {path} ({done} of {n_batches} batches done)",
                      file=sys.stderr, flush=True)
        if stats is None or stats.meta.get("batches_done", 0) < n_batches:
            stats = collect(self.model, blocks, calib.batch_size, stats=stats, checkpoint=path, progress=progress,
                            meta={"calibration": info, "code_version": code_version()},
                            stats_device=self.placement.get("stats_device"))
        stats.meta["path"] = str(path)
        self.loaded[key] = self.loaded[calib, str(path)] = stats, blocks  # asked for by the path it resolved to too
        return stats, blocks
