"""The headline experiment: held-out perplexity against the number of replaced layers, for each
(method, selector, one-shot/sequential) configuration, on one set of calibration statistics.
Shared by the tour (small) and ``benchmarks/nbl.py`` (the issue's targets); one JSON line per result."""

from __future__ import annotations

import copy
from pathlib import Path

from tqdm import tqdm

from ..core.atomic import append_jsonl, read_jsonl
from .evaluate import compare, outputs
from .pipeline import linearize
from .registry import Config
from .session import Calibration, Session

#: The paper's method and its baseline first; sequential NBL (a pass over the calibration set each), then the
#: CCA choice with layer 0 protected (CCA ranks it among the most linear; replacing it costs the most).
DEFAULT_CONFIGS = (Config("nbl", "cca"), Config("drop", "cosine"), Config("nbl", "cosine"), Config("nbl", "nmse"),
                   Config("drop", "cca"), Config("nbl", "cca", True), Config("nbl", "cca", keep=(0,)))


def perplexity_vs_layers(session: Session, calib: Calibration, heldout_tokens: int, ks: list[int],
                         configs=DEFAULT_CONFIGS, log: str | Path | None = None, progress: bool = True,
                         quiet: bool = False) -> list[dict]:
    """One row per (config, k): replaced layers, held-out perplexity, its increase and top-1 agreement.

    Rows already in ``log`` (JSONL) are reused, so an interrupted run resumes.
    """
    stats, blocks = session.stats(calib, progress=progress, quiet=quiet)
    heldout, _ = session.blocks(calib.source, "heldout", heldout_tokens, calib.seq_len)
    done = {(r["label"], r["k"]): r for r in read_jsonl(log)} if log else {}
    reference = outputs(session.model, heldout, calib.batch_size)
    rows = []
    todo = [(c, k) for c in configs for k in ks]
    for config, k in tqdm(todo, desc="nbl configs", disable=not progress):
        if (config.label, k) in done:
            rows.append(done[(config.label, k)])
            continue
        model = copy.deepcopy(session.model)
        layers, maps = linearize(model, stats, k, config.selector, config.method, sequential=config.sequential,
                                 blocks=blocks, batch_size=calib.batch_size, keep=config.keep)
        result = compare(model, reference, heldout, calib.batch_size)
        row = {"label": config.label, "method": config.method, "selector": config.selector,
               "sequential": config.sequential, "k": k, "layers": sorted(layers),
               "perplexity": result["perplexity"], "reference_perplexity": result["reference_perplexity"],
               "increase": result["perplexity"] / result["reference_perplexity"] - 1,
               "top1_agreement": result["top1_agreement"], "eval_tokens": result["eval_tokens"],
               "calibration_tokens": stats.tokens}
        rows.append(row)
        if log:
            append_jsonl(log, row)
        del model
    return rows
