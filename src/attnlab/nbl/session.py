"""What the CLI and the tour share: a loaded model with its calibration statistics, cached on disk.

Statistics are cached under ``cache_dir()/nbl`` keyed by the model fingerprint and the calibration
description, so ``rank`` then ``apply`` collect once; an interrupted collection resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import AttnlabError
from ..core.hf import load_model, load_tokenizer
from ..core.models import cache_dir, checkpoint_dir
from .data import blocks_from_source
from .stats import Stats, collect, fingerprint


@dataclass
class Calibration:
    source: str = "builtin"
    tokens: int = 16384
    seq_len: int = 256
    batch_size: int = 8


@dataclass
class Session:
    spec: str
    model: object
    tokenizer: object
    fingerprint: str

    @classmethod
    def open(cls, spec: str) -> "Session":
        model = load_model(spec)
        return cls(str(spec), model, load_tokenizer(spec), fingerprint(model))

    @property
    def checkpoint(self) -> Path:
        return checkpoint_dir(self.spec)

    def blocks(self, source: str, split: str, tokens: int, seq_len: int) -> tuple[torch.Tensor, dict]:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and seq_len > limit:
            raise AttnlabError(f"--seq-len {seq_len} exceeds the model's {limit} positions")
        return blocks_from_source(self.tokenizer, source, split, seq_len, tokens)

    def stats(self, calib: Calibration, path: str | Path | None = None, progress: bool = True) -> tuple[Stats, torch.Tensor]:
        """Statistics over the calibration split (loaded, resumed or collected) and the calibration blocks."""
        blocks, info = self.blocks(calib.source, "calibration", calib.tokens, calib.seq_len)
        if path is None:
            key = hashlib.sha256(json.dumps([self.fingerprint, info, calib.batch_size], sort_keys=True).encode())
            path = cache_dir() / "nbl" / f"stats-{self.fingerprint}-{key.hexdigest()[:12]}.safetensors"
        path = Path(path)
        stats = None
        if path.exists():
            stats = Stats.load(path, fingerprint=self.fingerprint)
            if stats.meta.get("calibration") != info:
                raise AttnlabError(f"{path}: collected on other calibration text ({stats.meta.get('calibration')}); "
                                   f"remove it or give another --stats path")
        n_batches = (len(blocks) + calib.batch_size - 1) // calib.batch_size
        if stats is None or stats.meta.get("batches_done", 0) < n_batches:
            stats = collect(self.model, blocks, calib.batch_size, stats=stats, checkpoint=path, progress=progress,
                            meta={"calibration": info})
        stats.meta["path"] = str(path)
        return stats, blocks
