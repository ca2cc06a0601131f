"""The NBL estimator pattern (DESIGN §3): statistics -> scores -> fit -> apply, one-shot or sequential."""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import AttnlabError
from .lmmse import AffineMap, affine_error, check_ridge, fit_affine
from .registry import SELECTORS
from .replace import apply, restored
from .scores import rank_layers
from .stats import LayerStats, Stats, collect


def score(stats: Stats, selector: str = "cca") -> dict[int, float]:
    """Per-layer score of one selector of :data:`~attnlab.nbl.registry.SELECTORS` (lower = replace first),
    computed once per :class:`Stats` (the CCA score costs a few eigendecompositions per layer)."""
    if selector not in SELECTORS:
        raise AttnlabError(f"unknown selector {selector!r} (use one of {', '.join(SELECTORS)})")
    if selector not in stats.scores:
        layer_score = SELECTORS[selector].resolve()
        stats.scores[selector] = {i: float(layer_score(st)) for i, st in stats.layers.items()}
    return dict(stats.scores[selector])


def rank_table(stats: Stats) -> list[dict]:
    """One row per layer: {"layer", and the score of every selector}."""
    cols = {sel: score(stats, sel) for sel in SELECTORS}
    return [{"layer": i, **{sel: cols[sel][i] for sel in SELECTORS}} for i in sorted(stats.layers)]


#: The fewest calibration tokens per model dimension for a fit without ridge: the sample C_XX of N tokens has
#: rank at most N - 1, so for N <= d the map reproduces its calibration text exactly (NMSE 0) and is arbitrary
#: elsewhere, and for N of a few d it still fits the calibration text far better than any other.
TOKENS_PER_DIM = 4


def check_tokens(tokens: int, d: int, ridge: float = 0.0) -> None:
    """A one-line error when ``tokens`` calibration tokens are too few for a well-posed fit of width ``d``
    without a ridge (fewer than :data:`TOKENS_PER_DIM` * d); the message says how many are needed."""
    need = TOKENS_PER_DIM * d
    if ridge == 0 and tokens < need:
        raise AttnlabError(f"{tokens} calibration tokens are too few for a well-posed fit of d = {d} (the map would "
                           f"reproduce its calibration text): give at least {need} (--tokens {need}) or a ridge "
                           f"(e.g. --ridge 0.01)")


def fit(stats: Stats, layers: list[int], ridge: float = 0.0) -> list[AffineMap]:
    """The LMMSE map of each layer in ``layers`` from ``stats`` (refused when the statistics hold too few
    tokens for ``ridge``: :func:`check_tokens`)."""
    missing = [i for i in layers if i not in stats.layers]
    if missing:
        raise AttnlabError(f"no statistics for layer(s) {missing}")
    maps = []
    for i in layers:
        st = stats.layers[i]
        check_tokens(st.n, st.d, ridge)
        cxx, cxa, caa = st.covariances()
        maps.append(fit_affine(i, st.mean_x.cpu().numpy(), st.mean_a.cpu().numpy(), cxx, cxa, caa, ridge))
    return maps


def check_request(n_layers: int, k: int, keep: tuple[int, ...] = ()) -> None:
    """One-line errors for a request that cannot be met: ``k`` layers of ``n_layers``, ``keep`` protected."""
    bad = sorted(i for i in set(keep) if not 0 <= i < n_layers)
    if bad:
        raise AttnlabError(f"--keep {bad}: no such layer (the model has layers 0..{n_layers - 1})")
    free = n_layers - len(set(keep))
    if not 1 <= k <= free:
        protected = f", {len(set(keep))} of them kept" if keep else ""
        raise AttnlabError(f"cannot replace {k} layers: the model has {n_layers}{protected} (ask for 1..{free})")


def best_run(stats: Stats, k: int, keep: tuple[int, ...] = ()) -> list[int]:
    """The ``k`` consecutive layers l..l+k-1 (none of them in ``keep``) with the smallest mean angular distance
    from the input of layer l to the output of layer l+k-1 (Gromov et al. 2024, Sec. 3.2; ties: the first)."""
    n = len(stats.layers)
    runs = {start: float(stats.layers[start + k - 1].mean_angular[start]) for start in range(n - k + 1)
            if not set(range(start, start + k)) & set(keep)}
    if not runs:
        raise AttnlabError(f"no run of {k} consecutive layers avoids the kept layers {sorted(keep)}")
    start = min(runs, key=lambda s: (runs[s], s))
    return list(range(start, start + k))


def choose_layers(stats: Stats, k: int, selector: str, keep: tuple[int, ...] = ()) -> list[int]:
    """The ``k`` best layers by ``selector``, never one of ``keep`` (layers the user protects); for a
    contiguous selector, the best run of ``k`` consecutive layers (:func:`best_run`)."""
    check_request(len(stats.layers), k, keep)
    if selector in SELECTORS and SELECTORS[selector].contiguous:
        return best_run(stats, k, keep)
    scores = {layer: v for layer, v in score(stats, selector).items() if layer not in keep}
    return rank_layers(scores, k)


def linearize(model, stats: Stats, k: int, selector: str = "cca", method: str = "nbl", ridge: float = 0.0,
              sequential: bool = False, blocks: torch.Tensor | None = None, batch_size: int = 8,
              progress: bool = False, keep: tuple[int, ...] = ()) -> tuple[list[int], list[AffineMap]]:
    """Replace the ``k`` best layers by ``selector`` (never those in ``keep``) in place; returns (chosen
    layers, fitted maps).

    One-shot (the paper): every map is fitted on statistics of the unmodified model. ``sequential``
    (beyond the paper): the layers are replaced in depth order, and before each fit the statistics of that
    layer are collected again through the model as modified so far, so each map sees the errors of the
    replacements before it.
    """
    check_ridge(ridge)
    layers = choose_layers(stats, k, selector, keep)
    if method != "nbl":  # drop, block: nothing to fit
        apply(model, method=method, layers=layers)
        return layers, []
    if not sequential:
        maps = fit(stats, layers, ridge)
        apply(model, maps)
        return layers, maps
    if blocks is None:
        raise AttnlabError("sequential NBL needs the calibration blocks to re-collect statistics")
    maps: list[AffineMap] = []
    entry = None
    for layer in sorted(layers):
        # statistics of `layer` through the model as modified so far, replaying the stream that entered the
        # previously replaced layer (unchanged by that replacement), so no layer runs twice per batch
        layer_stats = collect(model, blocks, batch_size, layers=[layer], progress=progress, enter=entry, capture=True)
        (m,) = fit(layer_stats, [layer], ridge)
        apply(model, [m])
        maps.append(m)
        entry = layer_stats.entry
    return layers, maps


def map_nmse(m: AffineMap, st: LayerStats) -> float:
    """E||A - (W X + b)||^2 / tr(C_YY) of map ``m`` under the moments of (X, A) in ``st`` (Y = X + A, the
    block's output): :attr:`AffineMap.nmse`'s definition, on any text."""
    cxx, cxa, caa = st.covariances()
    err = affine_error(m, st.mean_x.cpu().numpy(), st.mean_a.cpu().numpy(), cxx, cxa, caa)
    return err / max(float(np.trace(cxx) + 2 * np.trace(cxa) + np.trace(caa)), np.finfo(float).tiny)


def heldout_nmse(model, maps: list[AffineMap], blocks: torch.Tensor, batch_size: int = 8,
                 sequential: bool = False) -> dict[int, float]:
    """Each map's NMSE (:func:`map_nmse`) on ``blocks`` (e.g. held-out text), under the inputs it was fitted on:
    those of the unmodified model (one-shot) or of the model with the maps before it applied (sequential).
    ``model`` is the unmodified model and is left so."""
    with restored(model):
        if not sequential:
            stats = collect(model, blocks, batch_size, layers=[m.layer for m in maps], progress=False)
            return {m.layer: map_nmse(m, stats.layers[m.layer]) for m in maps}
        errors, entry = {}, None
        for m in sorted(maps, key=lambda m: m.layer):
            st = collect(model, blocks, batch_size, layers=[m.layer], progress=False, enter=entry, capture=True)
            errors[m.layer] = map_nmse(m, st.layers[m.layer])
            apply(model, [m])
            entry = st.entry
        return errors
