"""Grids of m* searches (over n_pairs, seq_len, gen_steps, rank, init), resumable and parallel.

A sweep directory is a run folder (:func:`attnlab.core.outputs.run_dir`): ``config.yaml`` (what was asked) and
``probes.jsonl``, one line per probe (``kind="probe"``) and one per finished search (``kind="result"``). The points
are the jobs of a grid (:func:`attnlab.core.grid.run_grid`, keyed by :func:`point_id`): rerunning the same config
resumes (finished points are skipped and the probes already logged for an unfinished one are replayed, so an
interruption loses at most the probe in flight; with ``prompt_seeds`` a point is the p(m) estimate of
:func:`attnlab.memorize.search.p_of_m_search`, a length's seeds fitted as one batch, and a rerun fits only the
seeds not logged); several processes sharing the folder each run other points; lines of the log that are not a
probe or a result are named once and skipped. Another config is refused (``overwrite`` replaces the folder). Each
point runs with ``threads`` torch threads (default one: measured, two intra-op threads on two shared cores are
slower than one) on the sweep's device and dtype (recorded in every result line; a dtype other than float32 is part
of the folder's identity, so it is not mixed into a float32 sweep). On a Ray cluster of several machines the folder
must be shared for probes to be replayed; the result lines come back to the driver, which writes them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..core.atomic import append_jsonl, atomic_write_text
from ..core.errors import AttnlabError, require
from ..core.grid import NUMBER, GridLog, Job, field_problem, run_grid
from ..core.outputs import run_dir
from ..core.runtime import machine, torch_dtype
from .backbone import Backbone, BackboneConfig
from .data import MemorizeData, make_data
from .search import backbone_batch_probe, p_of_m_search, search_min_length
from .settings import DEFAULTS, SEEDED_PARTS, SETTINGS, check_settings, part_seed
from .tune import TuneConfig

#: Settings added after sweeps were logged -> the value that does what those logs did. At that value a setting is
#: left out of a point's id, so those logs are still read and resumed as the points they are. A part's own seed
#: equal to ``seed`` is that value too (it draws the same numbers).
_LATE_KEYS: dict[str, Any] = {"m_start": 1, "backbone_draw": "legacy", "readout": "classes", "prompt_seeds": None,
                              "short_steps": None,
                              **{f"{part}_seed": None for part in SEEDED_PARTS}}
#: The late settings whose defaults (the invariant backbone, the whole-vocabulary readout) differ from what the older
#: logs did: a sweep folder's ``config.yaml`` without one in ``base`` predates it (its points did the late value).
_DRAW = "backbone_draw"
_FOLDER_LATE = (_DRAW, "readout")
_BACKBONE_KEYS = ("d_model", "n_heads", "n_layers", "d_ff", "norm", "init", "gain", "train_steps")
_TUNE_KEYS = ("lr", "clip", "max_steps")
_CONFIG_KEYS = ("name", "description", "base", "experiments", "seeds", "workers")
LOG = "probes.jsonl"
#: What the marker of a sweep folder calls it (the resume line reads "resuming the memorize sweep in DIR").
RUN_KIND = "memorize sweep"

#: The fields every log line of each kind must have, with their JSON types (bools are not numbers here).
_LINE_FIELDS: dict[str, dict[str, Any]] = {
    "probe": {"point": str, "m": int, "restart": int, "memorized": bool, "steps": int, "exact_accuracy": NUMBER,
              "seconds": NUMBER},
    "result": {"point": str, "m_star": (int, type(None)), "exact_accuracy": NUMBER, "steps": int,
               "n_probes": int, "probe_seconds": NUMBER},
}


def point_id(settings: dict[str, Any]) -> str:
    """A stable id for one search's settings (the same point in two experiments is run once)."""
    def late(k: str, v: Any) -> bool:
        return k in _LATE_KEYS and (v == _LATE_KEYS[k] or (k.endswith("_seed") and v == settings["seed"]))

    kept = {k: v for k, v in settings.items() if not late(k, v)}
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def _text_field(config: dict[str, Any], key: str) -> None:
    require(isinstance(config.get(key, ""), str), f"'{key}' must be a string, got {config.get(key)!r}")


def expand(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """experiment name -> list of full settings dicts. An experiment maps setting -> value or list of values
    (lists form a product grid); ``variants`` is a list of override dicts (e.g. init schemes); ``seeds`` (a list)
    repeats every point once per seed, so ``seed`` is not an experiment's setting. Every field is checked here,
    so a bad config fails in one line before anything runs or is written."""
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    require(not unknown, f"unknown sweep config keys: {', '.join(unknown)} (known: {', '.join(_CONFIG_KEYS)})")
    _text_field(config, "name")
    _text_field(config, "description")
    base = config.get("base")
    base = {} if base is None else base
    require(isinstance(base, dict), f"'base' must be a mapping of settings, got {type(base).__name__}")
    base = {**DEFAULTS, **base}
    check_settings(base, "base: ")
    seeds = config.get("seeds", [base["seed"]])
    require(isinstance(seeds, list) and bool(seeds) and all(SETTINGS["seed"].allows(s) for s in seeds)
            and len(set(seeds)) == len(seeds),
            f"'seeds' must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    workers = config.get("workers", 1)
    require(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1,
            f"'workers' must be a positive integer, got {workers!r}")
    experiments = config.get("experiments") or {}
    require(isinstance(experiments, dict) and bool(experiments),
            "the sweep config needs 'experiments': a mapping of experiment name -> settings to vary")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, spec in experiments.items():
        require(isinstance(name, str), f"experiment names must be strings, got {name!r}")
        spec = {} if spec is None else spec
        require(isinstance(spec, dict), f"experiment {name!r} must be a mapping of settings to vary")
        spec = dict(spec)
        variants = spec.pop("variants", [{}])
        require(isinstance(variants, list) and bool(variants) and all(isinstance(v, dict) for v in variants),
                f"experiment {name!r}: 'variants' must be a non-empty list of mappings of settings")
        grid = {k: v if isinstance(v, list) else [v] for k, v in spec.items()}
        empty = [k for k, v in grid.items() if not v]
        require(not empty, f"experiment {name!r}: {', '.join(empty)} is an empty list (give at least one value)")
        require("seed" not in grid and not any("seed" in v for v in variants),
                f"experiment {name!r} sets 'seed', which 'seeds' sets for every point: list the seeds in 'seeds', "
                "or vary data_seed, backbone_seed or prompt_seed")
        points = []
        for variant in variants:
            for values in itertools.product(*grid.values()):
                for seed in seeds:
                    settings = {**base, **dict(zip(grid, values, strict=True)), **variant, "seed": seed}
                    check_settings(settings, f"experiment {name!r}: ")
                    points.append(settings)
        out[name] = points
    return out


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """The form of ``config`` a sweep folder keeps (``config.yaml`` and the marker's identity), read back by
    :func:`folder_config` as the same points: ``backbone_draw`` and ``readout`` spelled out in ``base`` unless they
    are "legacy" and "classes", which a folder keeps as the older folders have them (absent), so they resume under a
    config that names them."""
    base = {**(config.get("base") or {})}
    for key in _FOLDER_LATE:
        base.setdefault(key, DEFAULTS[key])
        if base[key] == _LATE_KEYS[key]:
            del base[key]
    return {**config, "base": base}


def folder_config(out_dir: str | Path) -> dict[str, Any]:
    """The config of a sweep folder, as the points it logged: a ``base`` without ``backbone_draw`` (``readout``) is
    from before the invariant backbone (the whole-vocabulary readout), see :func:`stored_config`, so its points drew
    the legacy one (read out the n_classes labels)."""
    config = load_config(Path(out_dir) / "config.yaml")
    base = config.get("base") or {}
    if not isinstance(base, dict):
        return config
    return {**config, "base": {**{key: _LATE_KEYS[key] for key in _FOLDER_LATE}, **base}}


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"sweep config not found: {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise AttnlabError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    require(isinstance(config, dict), f"{path}: a sweep config is a mapping with 'base' and 'experiments'")
    return config


def build(settings: dict[str, Any]) -> tuple[MemorizeData, BackboneConfig, TuneConfig]:
    """(data, backbone config, tune config) for one point; raises a one-line error on impossible settings."""
    s = settings
    check_settings(s)
    require(s["gen_steps"] == 0 or s["target"] == "last", "gen_steps > 0 needs target='last'")
    require(1 <= s["m_start"] <= s["m_max"], f"m_start={s['m_start']} must be in 1..m_max={s['m_max']}")
    require(s["short_steps"] is None or s["prompt_seeds"] is not None,
            "short_steps is a second budget of the p(m) estimate: set prompt_seeds (>= 5) too")
    require(s["short_steps"] is None or s["short_steps"] < s["max_steps"],
            f"short_steps={s['short_steps']} must be below max_steps={s['max_steps']} (the fits run max_steps)")
    data = make_data(s["n_pairs"], s["seq_len"], s["vocab"], s["n_classes"], s["target"], s["rank"],
                     part_seed(s, "data"))
    cfg = BackboneConfig(vocab=s["vocab"], n_classes=s["n_classes"], max_len=s["seq_len"] + s["gen_steps"],
                         seed=part_seed(s, "backbone"), draw=s[_DRAW], readout=s["readout"],
                         **{k: s[k] for k in _BACKBONE_KEYS})
    return data, cfg, TuneConfig(**{k: s[k] for k in _TUNE_KEYS})


def budgets(settings: dict[str, Any]) -> list[int]:
    """The step budgets of a p(m) estimate: max_steps (the fits' own), then short_steps when set."""
    return [settings["max_steps"], *([settings["short_steps"]] if settings["short_steps"] is not None else [])]


def _line_problem(line: Any) -> str | None:
    kind = line.get("kind") if isinstance(line, dict) else None
    if not isinstance(kind, str) or kind not in _LINE_FIELDS:
        return "not a probe or a result of a memorize sweep"
    return field_problem(line, _LINE_FIELDS[kind])


def sweep_log(log_path: str | Path) -> GridLog:
    """The log of a sweep folder: probe and result lines, the results keyed by ``point``."""
    return GridLog(log_path, "memorize sweep", key="point", problem=_line_problem,
                   is_result=lambda line: line["kind"] == "result")


def run_point(settings: dict[str, Any], log_path: str | Path, device: str = "cpu",
              dtype: str = "float32") -> dict[str, Any]:
    """Search m* for one point on ``device`` in ``dtype`` (with ``prompt_seeds``: m*_q at each budget, the seeds of
    a length fitted as one batch), appending each probe to ``log_path`` and replaying probes logged before; returns
    the search's result line (the caller logs it)."""
    import torch

    pid = point_id(settings)
    done = {(r["m"], r["restart"]): {k: v for k, v in r.items() if k not in ("kind", "point", "m", "restart")}
            for r in sweep_log(log_path).lines(report=False) if r["kind"] == "probe" and r["point"] == pid}
    data, cfg, tune = build(settings)
    fresh = backbone_batch_probe(Backbone(cfg).to(device, torch_dtype(dtype)), data, settings["gen_steps"], tune,
                                 part_seed(settings, "prompt"))

    def probe(m: int, restarts: list[int]) -> list[dict[str, Any]]:
        todo = [r for r in restarts if (m, r) not in done]
        for r, rec in zip(todo, fresh(m, todo) if todo else [], strict=True):
            append_jsonl(log_path, {"kind": "probe", "point": pid, "m": m, "restart": r, **rec})
            done[(m, r)] = rec
        return [done[(m, r)] for r in restarts]

    line = {"kind": "result", "point": pid, "settings": settings}
    if settings["prompt_seeds"] is None:
        res = search_min_length(lambda m, r: probe(m, [r])[0], settings["m_max"], settings["restarts"],
                                settings["m_start"])
        line.update(m_star=res.m_star, exact_accuracy=res.exact_accuracy, steps=res.steps, n_probes=len(res.probes),
                    probe_seconds=round(sum(p["seconds"] for p in res.probes), 3))
    else:
        pms, probes = p_of_m_search(probe, settings["m_max"], settings["prompt_seeds"], budgets(settings),
                                    m_start=settings["m_start"], seed=settings["seed"])
        line.update(_pm_fields(pms, probes))
    return {**line, "trainable_params": None if line["m_star"] is None else line["m_star"] * settings["d_model"],
            "device": device, "dtype": dtype, "threads": torch.get_num_threads(), **machine(device)}


def _pm_fields(pms: list, probes: list[dict[str, Any]]) -> dict[str, Any]:
    """A p(m) point's result fields: m_star is m*_q (q = 0.5) at max_steps, with its interval and p(m) (``_short``:
    at short_steps); exact_accuracy and steps are the mean and median over the fits at m*_q (at m_max when there
    is none); a length's fits ran together, so its seconds are those of the slowest."""
    pm = pms[0]
    at = [p for p in probes if p["m"] == (pm.m_star or pm.m_max)]
    fields = {"m_star": pm.m_star, "ci": list(pm.ci), "p": pm.p, "q": pm.q, "budget": pm.budget,
              "exact_accuracy": statistics.fmean(p["exact_accuracy"] for p in at),
              "steps": int(statistics.median(p["steps"] for p in at)), "n_probes": len(probes),
              "probe_seconds": round(sum(max(p["seconds"] for p in probes if p["m"] == m) for m in pm.p), 3)}
    for short in pms[1:]:
        fields.update(m_star_short=short.m_star, ci_short=list(short.ci), p_short=short.p, budget_short=short.budget)
    return fields


def _point_job(args: Mapping[str, Any]) -> dict[str, Any]:
    return run_point(args["settings"], args["log"], args["device"], args["dtype"])


def run_identity(config: dict[str, Any], dtype: str = "float32") -> dict[str, Any]:
    """What makes two sweeps the same run (the folder's marker): the :func:`stored_config` without ``workers``,
    which changes how fast the points run, not what they give, plus the dtype when it is not float32 (so folders
    of float32 sweeps keep their marker)."""
    stored = stored_config(config)
    return {**{k: v for k, v in stored.items() if k != "workers"}, **({} if dtype == "float32" else {"dtype": dtype})}


def run_sweep(config: dict[str, Any], out_dir: str | Path, workers: int | None = None, progress: bool = True,
              overwrite: bool = False, quiet: bool = False, device: str = "cpu", dtype: str = "float32",
              threads: int = 1, backend: str = "local", ray_address: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every point of ``config`` into the run folder ``out_dir`` on ``device`` (a device
    :func:`attnlab.core.runtime.choose_device` gave) in ``dtype``, ``threads`` torch threads per point, in
    ``workers`` processes (default: the config's) or on Ray (``backend``, ``ray_address``); returns all
    result lines.

    The config and every point's settings are checked before the folder is touched. The same config resumes
    (one stderr line unless ``quiet``); a folder holding another config is refused unless ``overwrite``."""
    torch_dtype(dtype)  # an unknown dtype fails here, before the folder is touched
    points = expand(config)
    todo: dict[str, dict[str, Any]] = {}
    for settings in itertools.chain.from_iterable(points.values()):
        build(settings)  # impossible settings fail here, in one line, before any work starts
        todo.setdefault(point_id(settings), settings)
    out_dir, resuming = run_dir(out_dir, run_identity(config, dtype), overwrite, what=RUN_KIND, quiet=quiet)
    if not resuming:
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(stored_config(config), sort_keys=False))
    log = out_dir / LOG
    gpus = 0.25 if device.startswith("cuda") else 0.0  # small models: four searches share a GPU
    # cheapest first (cost ~ n_pairs * seq_len * (1 + gen_steps)), so results arrive early
    jobs = [Job(pid, {"settings": s, "log": str(log), "device": device, "dtype": dtype}, cpus=threads, gpus=gpus)
            for pid, s in sorted(todo.items(), key=lambda kv: kv[1]["n_pairs"] * kv[1]["seq_len"]
                                 * (1 + kv[1]["gen_steps"]))]
    run_grid(_point_job, jobs, sweep_log(log), workers=workers or config.get("workers", 1), threads=threads,
             backend=backend, ray_address=ray_address, progress=progress, quiet=quiet, desc="memorize sweep",
             unit="point", postfix=lambda r: f"m*={r['m_star']}", device=device)
    return results(out_dir)


def check_sweep_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path, or a one-line error when it is not a folder written by :func:`run_sweep`."""
    out_dir = Path(out_dir)
    require((out_dir / "config.yaml").is_file() and (out_dir / LOG).is_file(),
            f"{out_dir} is not a memorize sweep folder (expected config.yaml and {LOG} in it; see "
            "`attnlab memorize sweep --help`)")
    return out_dir


def results(out_dir: str | Path) -> list[dict[str, Any]]:
    """The finished searches of a sweep directory, one per point, each with the settings its config gives it
    and tagged with its experiments."""
    out_dir = check_sweep_dir(out_dir)
    by_point = sweep_log(out_dir / LOG).results()
    tagged: dict[str, dict[str, Any]] = {}
    for name, settings_list in expand(folder_config(out_dir)).items():
        for settings in settings_list:
            pid = point_id(settings)
            if pid in by_point:
                row = tagged.setdefault(pid, {**by_point[pid], "settings": settings, "experiments": []})
                row["experiments"].append(name)
    return list(tagged.values())
