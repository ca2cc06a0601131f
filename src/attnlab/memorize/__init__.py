"""attnlab.memorize: how short can a soft prompt be? (Wang & Lin, "Prompt Tuning Transformers for Data
Memorization", NeurIPS 2025.)

Pipeline: ``data`` (seeded datasets) -> ``backbone`` (frozen causal transformer, prompt states cached,
KV cache for generation steps) -> ``tune`` (fit one prompt to exact memorization) -> ``search`` (minimal
prompt length m*; ``statistic``: m*_q from the success probability p(m) over prompt seeds) -> ``sweep``
(resumable grids) -> ``theory`` (sqrt law and power-law fits) -> ``plots`` (figures and the sweep's run
record). ``peft_adapter`` runs the same search on any Hugging Face causal LM through peft; ``settings``
holds every setting and the registries (inits, targets, backbone draws, methods); ``tour`` is the
report's section.

The names below are imported on first use (PEP 562), so ``import attnlab.memorize`` (and the CLI's parser)
does not import torch.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

#: public name -> the submodule that defines it
_EXPORTS = {
    "Backbone": "backbone", "BackboneConfig": "backbone",
    "MemorizeData": "data", "random_tokens": "data", "lowrank_tokens": "data", "make_data": "data",
    "TuneConfig": "tune", "FitResult": "tune", "fit_prompt": "tune", "exact_match": "tune", "min_margin": "tune",
    "SearchResult": "search", "search_min_length": "search", "find_m_star": "search",
    "PmResult": "statistic", "estimate_m_star": "statistic", "m_star_q": "statistic",
    "bootstrap_interval": "statistic",
    "run_sweep": "sweep", "sweep_record": "plots",
    "SETTINGS": "settings", "DEFAULTS": "settings", "INITS": "settings", "TARGETS": "settings",
    "METHODS": "settings", "DRAWS": "settings",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
