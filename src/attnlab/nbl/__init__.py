"""Neural Block Linearization (Erdogan, Tonin, Cevher, NeurIPS 2025): replace the most linear attention
layers of a pretrained transformer by LMMSE affine maps, chosen by a CCA bound; with the Attention Drop
and ShortGPT baselines and a sequential refit.

    from attnlab.nbl import NBL
    nbl = NBL(n_layers=8, selector="cca").fit(model, tokenizer, data="builtin")
    nbl.save_pretrained("out/nbl8", model)      # or nbl.transform(model)

``estimator`` (:class:`NBL`) is built over the pipeline: ``stats`` (streamed float64 moments per layer)
-> ``scores`` (the selectors of ``registry``) -> ``lmmse`` (the affine maps) -> ``replace`` (swap in the
modules of ``hub``) -> ``io`` (save/load a checkpoint that serves as linearized); ``pipeline`` chains them,
``session`` and ``experiment`` serve the CLI, the tour (``tour``) and ``benchmarks/nbl.py``.

The names below are imported on first use (PEP 562), so ``import attnlab.nbl`` (and the CLI's parser)
does not import torch.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

#: public name -> the submodule that defines it
_EXPORTS = {
    "AffineMap": "lmmse", "fit_affine": "lmmse",
    "DroppedAttention": "hub", "LinearAttention": "hub", "apply": "replace", "replaced_layers": "replace",
    "load": "io", "save": "io",
    "choose_layers": "pipeline", "fit": "pipeline", "linearize": "pipeline", "rank_table": "pipeline",
    "score": "pipeline",
    "LayerStats": "stats", "Stats": "stats", "collect": "stats", "fingerprint": "stats",
    "SELECTORS": "registry", "METHODS": "registry", "NBL": "estimator",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
