"""The user-facing face of NBL (DESIGN §3): one scikit-learn-style estimator over the pipeline functions.

    from attnlab.nbl import NBL

    nbl = NBL(n_layers=8, selector="cca").fit(model, tokenizer, data="builtin")
    nbl.scores_, nbl.layers_, nbl.maps_      # per-layer scores, the chosen layers, the fitted maps
    nbl.save_pretrained("out/smollm2-nbl8", model)   # loads with from_pretrained(..., trust_remote_code=True)
    nbl.transform(model)                     # or linearize the model in memory

``fit`` leaves the model as it was (sequential NBL replaces layers while it fits and puts them back);
``transform`` replaces them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import AttnlabError
from ..core.hf import decoder_layers
from .data import blocks_from_source, text_blocks
from .io import save
from .lmmse import AffineMap, check_ridge
from .pipeline import check_request, check_tokens, heldout_nmse, linearize, score
from .registry import METHODS, SELECTORS
from .replace import apply, check_method, replaced_layers, restored
from .stats import Stats, collect, fingerprint


class NBL:
    """Replace the ``n_layers`` most replaceable attention sub-layers (by ``selector``, one of
    :data:`~attnlab.nbl.registry.SELECTORS`) with ``method`` (one of :data:`~attnlab.nbl.registry.METHODS`):
    the LMMSE map (paper Prop. 3.1) or nothing (Attention Drop). ``sequential`` refits each map through the
    model modified so far; ``keep`` layers are never replaced; ``ridge`` is relative to the median eigenvalue
    of C_XX. ``tokens``, ``seq_len`` and ``batch_size`` cut the calibration text when ``fit`` is given a source
    or texts; ``seed`` shuffles a source's calibration documents before its first ``tokens`` are taken.

    Fitted attributes: ``stats_`` (the :class:`~attnlab.nbl.stats.Stats`), ``scores_`` (layer -> score, lower =
    replace first), ``layers_`` (the replaced layers, ascending), ``maps_`` (their
    :class:`~attnlab.nbl.lmmse.AffineMap`, empty for ``drop``), ``calibration_`` (what the text was, with the
    hashes of its documents), ``base_identity_`` (the model's dtype-free fingerprint, which ``eval`` checks).
    """

    def __init__(self, n_layers: int = 8, selector: str = "cca", method: str = "nbl", sequential: bool = False,
                 keep: tuple[int, ...] = (), ridge: float = 0.0, tokens: int = 16384, seq_len: int = 256,
                 batch_size: int = 8, seed: int = 0, progress: bool = False):
        self.n_layers, self.selector, self.method, self.sequential = n_layers, selector, method, sequential
        self.keep, self.ridge, self.tokens, self.seq_len = tuple(keep), ridge, tokens, seq_len
        self.batch_size, self.seed, self.progress = batch_size, seed, progress

    def __repr__(self) -> str:
        return (f"NBL(n_layers={self.n_layers}, selector={self.selector!r}, method={self.method!r}, "
                f"sequential={self.sequential}, keep={self.keep}, ridge={self.ridge})")

    def _check(self, model) -> None:
        """One-line errors for parameters that cannot work on ``model``, before any forward pass."""
        if self.selector not in SELECTORS:
            raise AttnlabError(f"unknown selector {self.selector!r} (use one of {', '.join(SELECTORS)})")
        if self.method not in METHODS:
            raise AttnlabError(f"unknown method {self.method!r} (use one of {', '.join(METHODS)})")
        check_ridge(self.ridge)
        if not isinstance(self.n_layers, int) or isinstance(self.n_layers, bool):
            raise AttnlabError(f"n_layers must be an integer, got {self.n_layers!r}")
        check_request(len(decoder_layers(model)), self.n_layers, self.keep)
        check_method(model, self.method)

    def _blocks(self, tokenizer, data, split: str = "calibration", tokens: int | None = None,
                seed: int | None = None) -> tuple[torch.Tensor, dict]:
        """Blocks of ``data``: ``split`` of a text source (``tokens`` of it, default ``self.tokens``, its documents
        shuffled by ``seed``, default ``self.seed``), a list of texts, or token ids (n_blocks, seq_len)."""
        tokens = self.tokens if tokens is None else tokens
        if isinstance(data, torch.Tensor):
            if data.dim() != 2 or data.dtype != torch.long:
                raise AttnlabError(f"data: token ids must be a (n_blocks, seq_len) long tensor, got "
                                   f"{tuple(data.shape)} {data.dtype}")
            return data, {"source": "token ids", "tokens": int(data.numel()), "seq_len": int(data.shape[1])}
        texts = isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data)
        if not (texts or isinstance(data, (str, Path))):
            raise AttnlabError(f"data: give a source (builtin, a .txt/.jsonl file, hf:NAME), a list of texts or "
                               f"token ids, not {type(data).__name__}")
        if tokenizer is None:
            raise AttnlabError("fit(model, tokenizer, data=...): text data needs the tokenizer")
        if not texts:
            return blocks_from_source(tokenizer, str(data), split, self.seq_len, tokens,
                                      self.seed if seed is None else seed)
        blocks, info = text_blocks(tokenizer, list(data), self.seq_len, tokens)
        return blocks, {"source": f"{len(data)} texts", **info}

    def fit(self, model, tokenizer=None, data: Any = "builtin", stats: Stats | None = None) -> NBL:
        """Collect statistics of ``model`` on ``data`` (or use ``stats``, collected on ``data``'s blocks), score
        every layer, choose ``n_layers`` and fit their maps. ``model`` is left unchanged."""
        self._check(model)
        blocks, calibration = self._blocks(tokenizer, data)
        if self.method == "nbl":  # before minutes of statistics
            check_tokens(stats.tokens if stats is not None else int(blocks.numel()), model.config.hidden_size,
                         self.ridge)
        if stats is None:
            stats = collect(model, blocks, self.batch_size, progress=self.progress, meta={"calibration": calibration})
        with restored(model):  # sequential NBL replaces layers as it goes; fit leaves the model as it was
            layers, maps = linearize(model, stats, self.n_layers, self.selector, self.method, self.ridge,
                                     self.sequential, blocks, self.batch_size, self.progress, self.keep)
        self.stats_, self.calibration_ = stats, stats.meta.get("calibration", calibration)
        self.base_identity_ = fingerprint(model, portable=True)
        self.scores_ = score(stats, self.selector)
        self.layers_: list[int] = sorted(layers)
        self.maps_: list[AffineMap] = sorted(maps, key=lambda m: m.layer)
        return self

    def heldout_nmse(self, model, tokenizer=None, data: Any = "builtin", tokens: int = 4096) -> dict[int, float]:
        """Each fitted map's NMSE on held-out text (``tokens`` of a source's held-out split, in seed 0's order; or
        texts / token ids given), under the inputs it was fitted on; beside ``maps_[i].nmse`` on calibration
        text it shows how far the map generalises. ``model`` is the unmodified model."""
        self._fitted()
        if not self.maps_:
            return {}
        if replaced_layers(model):
            raise AttnlabError("heldout_nmse needs the unmodified model (this one has replaced layers); call it "
                               "before transform")
        blocks, _ = self._blocks(tokenizer, data, "heldout", tokens, seed=0)
        return heldout_nmse(model, self.maps_, blocks, self.batch_size, self.sequential)

    def _fitted(self) -> None:
        if not hasattr(self, "layers_"):
            raise AttnlabError("this NBL is not fitted yet: call fit(model, tokenizer, data=...) first")

    def transform(self, model):
        """Replace the fitted layers of ``model`` (the model that was fitted, or one of the same weights) in
        place; returns it."""
        self._fitted()
        if self.method == "nbl":
            return apply(model, self.maps_)
        return apply(model, method=self.method, layers=self.layers_)

    def fit_transform(self, model, tokenizer=None, data: Any = "builtin", stats: Stats | None = None):
        return self.fit(model, tokenizer, data, stats).transform(model)

    def info(self, **extra: Any) -> dict[str, Any]:
        """What ``nbl.json`` records of this fit (``extra`` added as given)."""
        self._fitted()
        return {"method": self.method, "selector": self.selector, "layers": self.layers_,
                "sequential": self.sequential, "ridge": self.ridge, "keep": sorted(self.keep),
                "base_fingerprint": self.stats_.fingerprint, "base_identity": self.base_identity_,
                "calibration": self.calibration_, **extra}

    def save_pretrained(self, directory: str | Path, model, overwrite: bool = False) -> Path:
        """Save the linearized checkpoint of ``model`` (the fitted model, linearized or not, loaded from a local
        checkpoint folder; or that folder) to ``directory``: see :func:`attnlab.nbl.io.write`."""
        self._fitted()
        base = model if isinstance(model, (str, Path)) else getattr(model, "name_or_path", "")
        if not base or not (Path(base) / "config.json").is_file():
            raise AttnlabError(f"save_pretrained needs the model's local checkpoint folder (the model says "
                               f"{base!r}); pass the folder instead of the model")
        return save(directory, base, self.maps_, self.info(base_model=str(base)), overwrite)
