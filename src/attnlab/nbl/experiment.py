"""The headline experiment: held-out perplexity against the number of replaced layers, for each
(method, selector, one-shot/sequential) configuration, on one set of calibration statistics.
Shared by ``attnlab nbl compare``, the tour (small) and ``benchmarks/nbl.py`` (the issue's targets).

The (configuration, k) pairs are the jobs of a grid (:func:`attnlab.core.grid.run_grid`, keyed by
:func:`job_key`), one row each in a JSONL log (``rows.jsonl`` of a compare folder): a rerun resumes, several
processes can share one folder, and the jobs run here, in worker processes or as Ray tasks (a model per GPU on
CUDA). The jobs share the loaded model, its statistics, the held-out blocks and the original model's outputs
on them: each process builds those once (:func:`_shared`), and this process lends the caller's session to the
jobs it runs itself. Logs written before the grid runner (rows with ``label`` and ``k`` but no ``key``) still
resume: their keys are derived (:class:`RowLog`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.grid import NUMBER, GridLog, Job, field_problem, run_grid
from .evaluate import Outputs, compare, outputs
from .pipeline import linearize
from .registry import Config
from .replace import restored
from .session import Calibration, Session
from .stats import Stats

#: The paper's method and its baseline first; sequential NBL (a pass over the calibration set each), then the
#: CCA choice with layer 0 protected (CCA ranks it among the most linear; replacing it costs the most), then
#: the whole-block drops users compare against (ShortGPT's block influence, Gromov et al.'s angular distance).
DEFAULT_CONFIGS = (Config("nbl", "cca"), Config("drop", "cosine"), Config("nbl", "cosine"), Config("nbl", "nmse"),
                   Config("drop", "cca"), Config("nbl", "cca", True), Config("nbl", "cca", keep=(0,)),
                   Config("block", "bi"), Config("block", "angular"))

#: What every row holds besides its key.
ROW_FIELDS = {"label": str, "k": int, "layers": list, "perplexity": NUMBER, "reference_perplexity": NUMBER,
              "increase": NUMBER, "top1_agreement": NUMBER}


def job_key(label: str, k: int) -> str:
    """The grid key of configuration ``label`` at ``k`` replaced layers, e.g. ``nbl/cca@k4``."""
    return f"{label}@k{k}"


def _row_problem(line: Any) -> str | None:
    keyed = not isinstance(line, dict) or "key" in line  # a row logged before keys existed has none
    return field_problem(line, {"key": str, **ROW_FIELDS} if keyed else ROW_FIELDS)


class RowLog(GridLog):
    """The log of a comparison, keyed by :func:`job_key`; a row logged without a key (before the grid
    runner) gets the key of its ``label`` and ``k``."""

    def __init__(self, path: str | Path):
        super().__init__(path, "nbl comparison", problem=_row_problem)

    def lines(self, report: bool = True) -> list[dict[str, Any]]:
        return [line if "key" in line else {**line, "key": job_key(line["label"], line["k"])}
                for line in super().lines(report)]


@dataclass
class _Shared:
    """What every job of one comparison needs, built once per process."""

    session: Session
    calib: Calibration
    stats: Stats
    blocks: torch.Tensor
    heldout: torch.Tensor
    reference: Outputs


#: The one :class:`_Shared` of this process, by :func:`_shared_key`: a long-lived worker holds one model.
_SHARED: dict[tuple, _Shared] = {}


def _shared_key(args: Mapping[str, Any]) -> tuple:
    return (args["model"], args["device"], args["dtype"], json.dumps(args["placement"], sort_keys=True),
            json.dumps(args["calibration"], sort_keys=True), args["heldout_tokens"], args["stats"])


def _shared(args: Mapping[str, Any], session: Session | None = None) -> _Shared:
    """The shared state of the comparison ``args`` describes, built on first use in this process from
    ``session`` or from a session opened here; the statistics come from the file the caller collected."""
    key = _shared_key(args)
    if key not in _SHARED:
        _SHARED.clear()
        session = session or Session.open(args["model"], args["device"], args["dtype"], **args["placement"])
        calib = Calibration(**args["calibration"])
        stats, blocks = session.stats(calib, args["stats"], progress=False, quiet=True)
        heldout, _ = session.blocks(calib.source, "heldout", args["heldout_tokens"], calib.seq_len)
        reference = outputs(session.model, heldout, calib.batch_size)
        _SHARED[key] = _Shared(session, calib, stats, blocks, heldout, reference)
    return _SHARED[key]


def compare_job(args: Mapping[str, Any]) -> dict[str, Any]:
    """The grid job of one (configuration, k): replace k layers of the model in place, compare it with the
    original on the held-out blocks, put the layers back (no copy of the model); returns the row."""
    shared = _shared(args)
    config, k, calib = Config.parse(args["config"]), args["k"], shared.calib
    with restored(shared.session.model) as model:
        layers, _ = linearize(model, shared.stats, k, config.selector, config.method, sequential=config.sequential,
                              blocks=shared.blocks, batch_size=calib.batch_size, keep=config.keep)
        result = compare(model, shared.reference, shared.heldout, calib.batch_size)
    return {"label": config.label, "method": config.method, "selector": config.selector,
            "sequential": config.sequential, "k": k, "layers": sorted(layers),
            "perplexity": result["perplexity"], "reference_perplexity": result["reference_perplexity"],
            "increase": result["perplexity"] / result["reference_perplexity"] - 1,
            "top1_agreement": result["top1_agreement"], "eval_tokens": result["eval_tokens"],
            "calibration_tokens": shared.stats.tokens}


def perplexity_vs_layers(session: Session, calib: Calibration, heldout_tokens: int, ks: list[int],
                         configs=DEFAULT_CONFIGS, log: str | Path | None = None, stats_path: str | Path | None = None,
                         progress: bool = True, quiet: bool = False, workers: int | None = None,
                         threads: int | None = None, backend: str = "local",
                         ray_address: str | None = None) -> list[dict]:
    """One row per (config, k), in that order: replaced layers, held-out perplexity, its increase and top-1
    agreement.

    The statistics (from ``stats_path``, default the cache) are collected here first; the rows run on
    :func:`~attnlab.core.grid.run_grid` (``workers`` processes, default 1, or Ray with ``backend="ray"``;
    ``threads`` each, default this process's count; a GPU each on CUDA). Rows already in ``log`` (JSONL) are
    reused, so an interrupted run resumes; without ``log`` the rows are logged in a temporary folder. Rows that
    other processes sharing ``log`` are still computing are left out.
    """
    stats, _ = session.stats(calib, stats_path, progress=progress, quiet=quiet)
    common = {"model": session.spec, "device": session.device, "dtype": session.dtype, "placement": session.placement,
              "calibration": calib.to_dict(),
              "heldout_tokens": heldout_tokens, "stats": stats.meta["path"]}
    threads = threads or torch.get_num_threads()
    gpus = 1.0 if session.device.startswith("cuda") else 0.0
    jobs = [Job(job_key(c.label, k), {**common, "config": c.label, "k": k}, cpus=threads, gpus=gpus)
            for c in configs for k in ks]
    with contextlib.ExitStack() as stack:
        # built here first (bad input fails here, in one line, on any backend); the jobs this process runs use
        # the caller's session, which is not kept alive after
        stack.callback(_SHARED.pop, _shared_key(common), None)
        _shared(common, session)
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "rows.jsonl"
        rows = run_grid(compare_job, jobs, RowLog(log), workers=workers or 1, threads=threads, backend=backend,
                        ray_address=ray_address, progress=progress, quiet=quiet, desc="nbl compare", unit="config",
                        postfix=lambda r: f"{r['key']} ppl {r['perplexity']:.4g}",
                        device=session.device)
    return [rows[job.key] for job in jobs if job.key in rows]
