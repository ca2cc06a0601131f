"""Grids of m* searches (over n_pairs, seq_len, gen_steps, rank, init), resumable and parallel.

A sweep directory holds ``config.yaml`` (what was asked) and ``probes.jsonl``: one line per probe
(``kind="probe"``) and one per finished search (``kind="result"``). A restarted sweep skips finished
points and replays the probes already logged for an unfinished one, so an interruption loses at most the
probe in flight. Points run in worker processes with one torch thread each (brief section 4.2: two
intra-op threads on two cores are slower than one).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ..core.atomic import append_jsonl, atomic_write_text, read_jsonl
from ..core.errors import AttnlabError, require
from .backbone import Backbone, BackboneConfig
from .data import MemorizeData, make_data
from .search import backbone_probe, search_min_length
from .tune import TuneConfig

#: Every setting of one m* search, with defaults. A sweep config overrides them in ``base`` and per experiment.
DEFAULTS: dict[str, Any] = {
    "n_pairs": 64, "seq_len": 8, "vocab": 64, "n_classes": 8, "target": "last", "rank": None, "gen_steps": 0,
    "d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 128, "norm": True, "init": "gaussian", "gain": 3.0,
    "train_steps": 300, "lr": 0.1, "clip": 1.0, "max_steps": 400, "m_max": 256, "restarts": 2, "seed": 0,
    "m_start": 1,
}
#: Settings added after sweeps were logged: left out of a point's id at their default, so those logs still resume.
_LATE_KEYS = ("m_start",)
_BACKBONE_KEYS = ("d_model", "n_heads", "n_layers", "d_ff", "norm", "init", "gain", "train_steps")
_TUNE_KEYS = ("lr", "clip", "max_steps")
LOG = "probes.jsonl"


def point_id(settings: dict[str, Any]) -> str:
    """A stable id for one search's settings (the same point in two experiments is run once)."""
    kept = {k: v for k, v in settings.items() if not (k in _LATE_KEYS and v == DEFAULTS[k])}
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def expand(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """experiment name -> list of full settings dicts. An experiment maps setting -> value or list of values
    (lists form a product grid); ``variants`` is a list of override dicts (e.g. init schemes)."""
    unknown = set(config) - {"name", "base", "experiments", "seeds", "workers", "description"}
    require(not unknown, f"unknown sweep config keys: {', '.join(sorted(unknown))}")
    base = {**DEFAULTS, **(config.get("base") or {})}
    seeds = config.get("seeds", [base["seed"]])
    out: dict[str, list[dict[str, Any]]] = {}
    for name, spec in (config.get("experiments") or {}).items():
        spec = dict(spec or {})
        variants = spec.pop("variants", [{}])
        grid = {k: v if isinstance(v, list) else [v] for k, v in spec.items()}
        points = []
        for variant in variants:
            for values in itertools.product(*grid.values()):
                for seed in seeds:
                    settings = {**base, **dict(zip(grid, values)), **variant, "seed": seed}
                    bad = set(settings) - set(DEFAULTS)
                    require(not bad, f"experiment {name!r}: unknown settings {', '.join(sorted(bad))}")
                    points.append(settings)
        out[name] = points
    require(bool(out), "the sweep config has no experiments")
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"sweep config not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise AttnlabError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    require(isinstance(config, dict), f"{path}: a sweep config is a mapping with 'base' and 'experiments'")
    return config


def build(settings: dict[str, Any]) -> tuple[MemorizeData, BackboneConfig, TuneConfig]:
    """(data, backbone config, tune config) for one point; raises a one-line error on impossible settings."""
    s = settings
    data = make_data(s["n_pairs"], s["seq_len"], s["vocab"], s["n_classes"], s["target"], s["rank"], s["seed"])
    cfg = BackboneConfig(vocab=s["vocab"], n_classes=s["n_classes"], max_len=s["seq_len"] + s["gen_steps"],
                         seed=s["seed"], **{k: s[k] for k in _BACKBONE_KEYS})
    require(s["gen_steps"] == 0 or s["target"] == "last", "gen_steps > 0 needs target='last'")
    require(1 <= s["m_start"] <= s["m_max"], f"m_start={s['m_start']} must be in 1..m_max={s['m_max']}")
    return data, cfg, TuneConfig(**{k: s[k] for k in _TUNE_KEYS})


def run_point(settings: dict[str, Any], log_path: str | Path) -> dict[str, Any]:
    """Search m* for one point, appending each probe to ``log_path`` and replaying probes logged before."""
    pid = point_id(settings)
    logged = read_jsonl(log_path)
    finished = [r for r in logged if r.get("kind") == "result" and r["point"] == pid]
    if finished:  # another process finished it since this sweep started
        return finished[0]
    done = {(r["m"], r["restart"]): r for r in logged if r.get("kind") == "probe" and r["point"] == pid}
    data, cfg, tune = build(settings)
    fresh = backbone_probe(Backbone(cfg), data, settings["gen_steps"], tune, settings["seed"])

    def probe(m: int, restart: int) -> dict[str, Any]:
        if (m, restart) in done:
            return {k: v for k, v in done[(m, restart)].items() if k not in ("kind", "point", "m", "restart")}
        rec = fresh(m, restart)
        append_jsonl(log_path, {"kind": "probe", "point": pid, "m": m, "restart": restart, **rec})
        return rec

    res = search_min_length(probe, settings["m_max"], settings["restarts"], settings["m_start"])
    result = {"kind": "result", "point": pid, "settings": settings, "m_star": res.m_star,
              "exact_accuracy": res.exact_accuracy, "steps": res.steps, "n_probes": len(res.probes),
              "probe_seconds": round(sum(p["seconds"] for p in res.probes), 3),
              "trainable_params": None if res.m_star is None else res.m_star * settings["d_model"]}
    append_jsonl(log_path, result)
    return result


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_point_job(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    return run_point(*job)


def run_sweep(config: dict[str, Any], out_dir: str | Path, workers: int | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) every point of ``config`` into ``out_dir``; returns all result lines."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    points = expand(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    log = out_dir / LOG
    finished = {r["point"] for r in read_jsonl(log) if r.get("kind") == "result"}
    todo: dict[str, dict[str, Any]] = {}
    for settings in itertools.chain.from_iterable(points.values()):
        build(settings)  # bad settings fail here, with a one-line error, before any work starts
        if point_id(settings) not in finished:
            todo.setdefault(point_id(settings), settings)
    # cheapest first (cost ~ n_pairs * seq_len * (1 + gen_steps)), so results arrive early
    jobs = sorted(todo.values(), key=lambda s: s["n_pairs"] * s["seq_len"] * (1 + s["gen_steps"]))
    workers = workers or int(config.get("workers", 1))
    bar = tqdm(total=len(jobs), desc="memorize sweep", unit="point", file=sys.stderr, disable=not progress)
    if workers == 1:
        _init_worker()
        for settings in jobs:
            run_point(settings, log)
            bar.update()
    else:
        os.environ["OMP_NUM_THREADS"] = "1"
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_run_point_job, [(s, str(log)) for s in jobs]):
                bar.update()
    bar.close()
    return results(out_dir)


def results(out_dir: str | Path) -> list[dict[str, Any]]:
    """The finished searches of a sweep directory, one per point, each tagged with its experiments."""
    out_dir = Path(out_dir)
    require((out_dir / LOG).exists(), f"no sweep results in {out_dir} (expected {LOG})")
    by_point = {r["point"]: r for r in read_jsonl(out_dir / LOG) if r.get("kind") == "result"}
    tagged: dict[str, dict[str, Any]] = {}
    for name, settings_list in expand(load_config(out_dir / "config.yaml")).items():
        for settings in settings_list:
            pid = point_id(settings)
            if pid in by_point:
                tagged.setdefault(pid, {**by_point[pid], "experiments": []})["experiments"].append(name)
    return list(tagged.values())
