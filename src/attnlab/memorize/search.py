"""The minimal prompt length m* that memorizes a dataset exactly (the quantity the main theorem bounds by
O~(sqrt(n_pairs * seq_len))).

Search: try m = 1, 2, 4, ... until one memorizes, then bisect between the last failure and the first
success. A length is declared failed only after ``restarts`` independent prompt initialisations fail
(success at a fixed step budget is noisy: near m* a fit succeeds for some prompt initialisations only).
Success is taken as monotone in m: any length above a success counts as a success, and any length below a
failure as a failure, so the doubling may start at ``m_start`` > 1 (a success there is bisected down
towards 1) without changing m* under that assumption.
The step budget is part of the result, and every probe is logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import require
from .backbone import Backbone, BackboneConfig
from .data import MemorizeData
from .statistic import PmResult, estimate_m_star, smallest_length
from .tune import TuneConfig, fit_prompts

Probe = Callable[[int, int], dict[str, Any]]  # (m, restart) -> {"memorized": bool, ...}
#: (m, restarts) -> one fit summary per restart (prompt initialisation), fitted together
BatchProbe = Callable[[int, list[int]], list[dict[str, Any]]]


@dataclass
class SearchResult:
    m_star: int | None          # None: nothing up to m_max memorized within the budget
    exact_accuracy: float       # of the probe that memorized at m_star (else the best probe at m_max)
    steps: int                  # optimiser steps of that probe
    m_max: int
    restarts: int
    probes: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_seed(seed: int, m: int, restart: int) -> int:
    """A distinct, reproducible prompt-initialisation seed per (run seed, length, restart)."""
    return (seed * 1_000_003 + m * 1009 + restart) % 2**31


def search_min_length(probe: Probe, m_max: int, restarts: int = 2, m_start: int = 1) -> SearchResult:
    """Doubling from ``m_start``, then bisection, over m in [1, m_max] with ``restarts`` tries per length (see
    module doc)."""
    require(isinstance(restarts, int) and restarts >= 1, f"restarts must be at least 1, got {restarts!r}")
    t0 = time.perf_counter()
    log: list[dict[str, Any]] = []

    def memorizes(m: int) -> dict[str, Any] | None:
        for r in range(restarts):
            rec = {"m": m, "restart": r, **probe(m, r)}
            log.append(rec)
            if rec["memorized"]:
                return rec
        return None

    hi, win = smallest_length(memorizes, m_max, m_start)
    if win is None:
        win = max((p for p in log if p["m"] == m_max), key=lambda p: p.get("exact_accuracy", 0.0))
    return SearchResult(m_star=hi, exact_accuracy=win.get("exact_accuracy", 1.0 if hi else 0.0),
                        steps=win.get("steps", 0), m_max=m_max, restarts=restarts, probes=log,
                        seconds=round(time.perf_counter() - t0, 3))


def backbone_probe(backbone: Backbone, data: MemorizeData, gen_steps: int = 0, tune: TuneConfig | None = None,
                   seed: int = 0, prompts: dict[tuple[int, int], Any] | None = None) -> Probe:
    """A probe that fits a fresh prompt (:func:`attnlab.memorize.tune.fit_prompt`) on the cached backbone;
    ``prompts``, when given, receives the prompt of every fit that memorized, keyed by (m, restart)."""
    batch = backbone_batch_probe(backbone, data, gen_steps, tune, seed, prompts)
    return lambda m, restart: batch(m, [restart])[0]


def find_m_star(data: MemorizeData, backbone: Backbone | BackboneConfig, gen_steps: int = 0,
                tune: TuneConfig | None = None, m_max: int = 256, restarts: int = 2, seed: int = 0,
                m_start: int = 1) -> SearchResult:
    """m* for ``data`` on a frozen backbone (built from its config when one is given)."""
    if isinstance(backbone, BackboneConfig):
        backbone = Backbone(backbone)
    return search_min_length(backbone_probe(backbone, data, gen_steps, tune, seed), m_max, restarts, m_start)


def backbone_batch_probe(backbone: Backbone, data: MemorizeData, gen_steps: int = 0, tune: TuneConfig | None = None,
                         seed: int = 0, prompts: dict[tuple[int, int], Any] | None = None) -> BatchProbe:
    """:func:`backbone_probe` for several restarts at one length, batched (:func:`fit_prompts`): restart r gets the
    same prompt seed, and so the same fit, as the restart search's probe (m, r)."""
    tune = tune or TuneConfig()

    def probe(m: int, restarts: list[int]) -> list[dict[str, Any]]:
        fits = fit_prompts(backbone, data, m, [prompt_seed(seed, m, r) for r in restarts], gen_steps, tune)
        if prompts is not None:
            prompts.update({(m, r): f.prompt for r, f in zip(restarts, fits, strict=True) if f.memorized})
        return [f.summary() for f in fits]

    return probe


def p_of_m_search(probe: BatchProbe, m_max: int, n_seeds: int, budgets: Sequence[int], q: float = 0.5,
                  m_start: int = 1, n_boot: int = 2000, seed: int = 0) -> tuple[list[PmResult], list[dict[str, Any]]]:
    """m*_q at each step budget (:func:`attnlab.memorize.statistic.estimate_m_star`) from ``n_seeds`` prompt seeds
    per length tried, fitted together by ``probe`` within the longest budget; returns the estimates and every fit's
    summary (with its ``m`` and ``restart``: the index of its prompt seed)."""
    log: list[dict[str, Any]] = []

    def outcomes(m: int) -> list[int | None]:
        recs = [{"m": m, "restart": r, **rec} for r, rec in enumerate(probe(m, list(range(n_seeds))))]
        log.extend(recs)
        return [r["steps"] if r["memorized"] else None for r in recs]

    return estimate_m_star(outcomes, m_max, n_seeds, budgets, q, m_start, n_boot, seed=seed), log
