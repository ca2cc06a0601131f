"""Neural Block Linearization (Erdogan, Tonin, Cevher, NeurIPS 2025): replace the most linear attention
layers of a pretrained transformer by LMMSE affine maps, chosen by a CCA bound; with the Attention Drop
and ShortGPT baselines and a sequential refit.

    from attnlab.nbl import collect, rank_table, linearize, save, load
"""

from .apply import DroppedAttention, LinearAttention, apply, replaced_layers
from .fit import AffineMap, fit_affine
from .io import load, save
from .pipeline import choose_layers, fit, linearize, rank_table, score
from .stats import LayerStats, Stats, collect, fingerprint

__all__ = ["AffineMap", "DroppedAttention", "LayerStats", "LinearAttention", "Stats", "apply", "choose_layers",
           "collect", "fingerprint", "fit", "fit_affine", "linearize", "load", "rank_table", "replaced_layers",
           "save", "score", "tour"]


def tour(out_dir, seed: int = 0):
    """The report section: ranks, perplexity against replaced layers, speed (see :mod:`attnlab.nbl.tour`)."""
    from .tour import run

    return run(out_dir, seed)
