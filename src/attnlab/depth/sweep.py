"""Fixed-budget depth sweeps: train a (budget x depth x seed) grid of small LMs, one JSONL line per model.

For each non-embedding budget N and depth L the width is the one whose *exact* non-embedding count
(:func:`attnlab.depth.params.count`, GPT-2 family) is nearest N, snapped so the head count divides it;
that count is recorded and a shape more than ``tolerance`` away from N is refused. The data is a source
of :mod:`attnlab.depth.data` (character-level text, or the unlimited synthetic grammar). Every model
sees either the same number of training tokens (``tokens``) or ``tokens_per_param`` times its exact
non-embedding count (Chinchilla-like: Hoffmann et al. 2022 train ~20 tokens per parameter), and is
scored by its held-out loss. With ``lr_base_width`` the hidden matrices' learning rate is scaled per
width, muP-style. The analysis takes the best depth per budget with its spread across seeds, fits
``ln d* = a + b L*`` as the paper does (Levine et al. 2020, Sec. 4; fit a = 5.039, b = 0.0555), and
tests the slope of L*(budget) (:mod:`attnlab.depth.slope`).

The grid runs on :func:`attnlab.core.grid.run_grid` (resumable, job claiming across processes, local
workers or Ray); its log is still ``results.jsonl`` keyed by ``key``, so folders written before it resume.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.atomic import atomic_write_json
from ..core.errors import AttnlabError, refuse_unknown_keys
from ..core.grid import NUMBER, GridLog, Job, run_grid
from ..core.runtime import machine
from .data import SOURCES, data_source
from .params import count, gpt2_like
from .theory import fit_depth_for_budget, optimal_width

if TYPE_CHECKING:
    from ..core.records import RunRecord

RESULTS = "results.jsonl"
CONFIG = "config.json"
#: Fields that may grow between runs into the same directory (the grid); the rest must match.
GRID_FIELDS = ("budgets", "depths", "seeds", "workers", "gpu_share")
#: Fields added after the first sweeps, left out of the recipe at their defaults so older folders resume.
NEW_FIELDS = {"dtype": "float32", "source": "text", "hmm": None, "tokens_per_param": None, "lr_base_width": None}
#: Training precisions a sweep accepts (float16 would need loss scaling).
SWEEP_DTYPES = ("float32", "bfloat16")
#: The fields (and their types) of a result line that the analysis reads, besides its ``key``.
RESULT_FIELDS = {"budget": int, "depth": int, "seed": int, "width": int, "heads": int, "non_embedding": int,
                 "heldout_loss": NUMBER}


@dataclass
class SweepConfig:
    """A sweep: the grid, the text, and the training recipe every model shares."""

    budgets: list[int]
    depths: list[int]
    seeds: list[int] = field(default_factory=lambda: [0])
    text: str = "builtin"  # the text of source "text"
    tokens: int = 500_000  # training tokens per model (equal for every model), unless tokens_per_param
    source: str = "text"  # a data source of attnlab.depth.data.SOURCES: text, or hmm (the synthetic grammar)
    hmm: dict[str, Any] | None = None  # the grammar of source "hmm" (attnlab.depth.synthetic.HMMSpec fields)
    tokens_per_param: float | None = None  # training tokens = this x the model's exact non-embedding count
    lr_base_width: int | None = None  # muP-style: hidden matrices train at lr x lr_base_width / width
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.1
    head_dim: int = 16
    tolerance: float = 0.1
    eval_tokens: int = 65_536
    workers: int = 1
    dtype: str = "float32"  # training precision: float32, or bfloat16 autocast over float32 master weights
    gpu_share: float = 0.25  # on CUDA, the share of a GPU one model's job asks for (0.25: four models per GPU)

    def __post_init__(self) -> None:
        for name in ("budgets", "depths", "seeds"):
            values = getattr(self, name)
            if not isinstance(values, list) or not values or not all(_is_int(v) for v in values):
                raise AttnlabError(f"sweep config: {name} must be a non-empty list of integers, got {values!r}")
            if len(set(values)) < len(values):  # one job per key: a repeated value would train twice
                raise AttnlabError(f"sweep config: {name} lists a value twice ({values!r}); give each once")
        if min(self.budgets) < 1 or min(self.depths) < 1 or min(self.seeds) < 0:
            raise AttnlabError("sweep config: budgets and depths must be positive and seeds non-negative")
        for name in ("tokens", "batch_size", "seq_len", "head_dim", "eval_tokens", "workers"):
            _require(self, name, _is_int, lambda v: v >= 1, "a positive integer")
        _require(self, "warmup_steps", _is_int, lambda v: v >= 0, "a non-negative integer")
        _require(self, "lr", _is_number, lambda v: 0 < v <= 1, "a learning rate in (0, 1]")
        _require(self, "weight_decay", _is_number, lambda v: 0 <= v <= 1, "a weight decay in [0, 1]")
        _require(self, "tolerance", _is_number, lambda v: 0 < v < 1, "a number in (0, 1)")
        if self.dtype not in SWEEP_DTYPES:
            raise AttnlabError(f"sweep config: dtype must be one of {', '.join(SWEEP_DTYPES)}, got {self.dtype!r}"
                               " (float16 training needs loss scaling; use bfloat16)")
        if not isinstance(self.text, str) or not self.text:
            raise AttnlabError(f"sweep config: text must be a text source (builtin or a file), got {self.text!r}")
        _require(self, "gpu_share", _is_number, lambda v: 0 < v <= 1, "a share of one GPU in (0, 1]")
        if self.source not in SOURCES:
            raise AttnlabError(f"sweep config: source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.hmm is not None:
            if self.source != "hmm":
                raise AttnlabError("sweep config: hmm sets the grammar of source hmm; add `source: hmm` or drop hmm")
            from .synthetic import hmm_spec

            hmm_spec(self.hmm)  # a bad grammar setting is an error now, not in the first job
        if self.lr_base_width is not None:
            _require(self, "lr_base_width", _is_int, lambda v: v >= 1, "a positive integer (a width)")
        if self.tokens_per_param is not None:
            _require(self, "tokens_per_param", _is_number, lambda v: v > 0, "a positive number")
            return  # the step count is per model (grid() checks warmup against the shortest)
        if self.tokens < self.batch_size * self.seq_len:
            raise AttnlabError(f"sweep config: tokens ({self.tokens}) is less than one batch "
                               f"({self.batch_size} x {self.seq_len})")
        if self.warmup_steps >= self.steps:
            raise AttnlabError(f"sweep config: warmup_steps ({self.warmup_steps}) must be less than the "
                               f"{self.steps} training steps (tokens / (batch_size x seq_len)); lower it or raise "
                               "tokens")

    @property
    def steps(self) -> int:
        """Training steps of a model under ``tokens`` (the same for every model)."""
        return self.tokens // (self.batch_size * self.seq_len)

    def steps_for(self, non_embedding: int) -> int:
        """Training steps of a model with ``non_embedding`` parameters: ``tokens_per_param x N`` tokens
        (rounded up to whole batches) when that is set, else :attr:`steps`."""
        if self.tokens_per_param is None:
            return self.steps
        return math.ceil(self.tokens_per_param * non_embedding / (self.batch_size * self.seq_len))

    def lr_scale(self, width: int) -> float:
        """The hidden matrices' lr multiplier at ``width``: ``lr_base_width / width`` (muP for Adam, Yang et al.
        2021, "Tensor Programs V", Table 3: hidden weights' lr ~ 1 / fan_in; embeddings, biases and norms keep
        the base lr), or 1 without ``lr_base_width``."""
        return 1.0 if self.lr_base_width is None else self.lr_base_width / width


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true/false are not counts


def _is_number(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _require(config: SweepConfig, name: str, kind: Callable[[Any], bool], check: Callable[[Any], bool],
             what: str) -> None:
    value = getattr(config, name)
    if not (kind(value) and check(value)):
        hint = ""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                float(value)
                hint = f" (YAML reads {value} as text: write it with a dot, e.g. {float(value)!r})"
        raise AttnlabError(f"sweep config: {name} must be {what}, got {value!r}{hint}")


def load_config(path: str | Path) -> SweepConfig:
    """Read a YAML sweep config (keys are :class:`SweepConfig`'s fields); unknown keys are an error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"sweep config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise AttnlabError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise AttnlabError(f"{path}: expected a mapping of sweep settings")
    refuse_unknown_keys(data, {f.name for f in fields(SweepConfig)}, str(path))
    if "tokens" in data and "tokens_per_param" in data:
        raise AttnlabError(f"{path}: give tokens (the same for every model) or tokens_per_param, not both")
    missing = [f.name for f in fields(SweepConfig) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in data]
    if missing:
        raise AttnlabError(f"{path}: missing {', '.join(missing)} (e.g. budgets: [500000] and depths: [1, 2, 4])")
    return SweepConfig(**data)


def non_embedding_count(depth: int, width: int) -> int:
    """Exact non-embedding parameters of :class:`attnlab.depth.model.GPT` (:func:`attnlab.depth.params.count`
    of its GPT-2-family shape): ``L(12d^2 + 13d) + 2d``."""
    return count(gpt2_like(depth, width, vocab=1, seq_len=1))["non_embedding"]


def shape_for_budget(budget: int, depth: int, head_dim: int = 16, tolerance: float = 0.1) -> tuple[int, int, int]:
    """(width, heads, exact non-embedding count) of the depth-``depth`` model closest to ``budget``.

    Heads are within one of ``width / head_dim`` (at least 1) and divide the width; a shape whose
    exact count misses the budget by more than ``tolerance`` is a one-line error.
    """
    ideal = math.sqrt(budget / (12 * depth))
    near = max(1, round(ideal / head_dim))
    candidates = [(h * k, h) for h in {max(1, near - 1), near, near + 1}
                  for k in {max(1, math.floor(ideal / h)), math.ceil(ideal / h)}]
    width, heads = min(candidates, key=lambda s: (abs(non_embedding_count(depth, s[0]) - budget),
                                                  abs(s[0] / s[1] - head_dim)))
    n = non_embedding_count(depth, width)
    if abs(n - budget) > tolerance * budget:
        raise AttnlabError(f"budget {budget} is too small for depth {depth}: the nearest model (width {width}) has "
                           f"{n} non-embedding parameters, more than {tolerance:.0%} off (raise the budget or lower "
                           "the depth)")
    return width, heads, n


def grid(config: SweepConfig) -> list[dict[str, Any]]:
    """The jobs of ``config``, seed-major (every budget and depth once before the next seed). With
    ``tokens_per_param`` each job carries its own step count, and a warmup as long as the shortest is refused."""
    jobs = []
    for seed in config.seeds:
        for budget in config.budgets:
            for depth in config.depths:
                width, heads, n = shape_for_budget(budget, depth, config.head_dim, config.tolerance)
                job = {"key": job_key(budget, depth, seed), "budget": budget, "depth": depth, "seed": seed,
                       "width": width, "heads": heads, "non_embedding": n}
                if config.tokens_per_param is not None:
                    job["steps"] = config.steps_for(n)
                    if job["steps"] <= config.warmup_steps:
                        raise AttnlabError(f"sweep config: warmup_steps ({config.warmup_steps}) must be less than "
                                           f"the {job['steps']} training steps of {job['key']} (tokens_per_param "
                                           "x its parameters / (batch_size x seq_len)); lower it or raise "
                                           "tokens_per_param")
                jobs.append(job)
    return jobs


def job_key(budget: int, depth: int, seed: int) -> str:
    return f"N{budget}-L{depth}-s{seed}"


# ---------------------------------------------------------------- data


def check_source(config: SweepConfig):
    """The data source of ``config``, built now (before any folder or job): a missing or unreadable text is an
    error here, and so is a split too short for one window of ``seq_len + 1`` tokens."""
    data = data_source(config)
    data.check(config.seq_len)
    return data


# ---------------------------------------------------------------- training one model


def lr_at(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 10% of ``peak`` at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def _autocast(device: str, dtype: str):
    """bfloat16 autocast on ``device`` (float32 master weights), or nothing for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    import torch

    from ..core.runtime import torch_dtype

    return torch.autocast(device_type=device.split(":")[0], dtype=torch_dtype(dtype))


def heldout_loss(model, windows, batch_size: int = 64, device: str = "cpu", dtype: str = "float32") -> float:
    """Mean next-token cross-entropy (nats) over held-out ``windows`` (n, seq_len + 1)."""
    import torch

    n = len(windows)
    x, y = windows[:, :-1], windows[:, 1:]
    total = 0.0
    model.eval()
    with torch.no_grad(), _autocast(device, dtype):
        for i in range(0, n, batch_size):
            _, loss = model(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))
            total += loss.item() * len(x[i:i + batch_size])
    model.train()
    return total / n


def param_groups(model, config: SweepConfig, width: int) -> list[dict[str, Any]]:
    """AdamW groups: the blocks' matrices (weight decay, lr scaled by :meth:`SweepConfig.lr_scale`), the
    embeddings (the tied head among them: weight decay, base lr), and biases and norms (base lr, no decay)."""
    groups: dict[str, list] = {"hidden": [], "embedding": [], "other": []}
    for name, p in model.named_parameters():
        groups["other" if p.dim() < 2 else "hidden" if name.startswith("blocks.") else "embedding"].append(p)
    scale = {"hidden": config.lr_scale(width), "embedding": 1.0, "other": 1.0}
    return [{"params": ps, "weight_decay": 0.0 if kind == "other" else config.weight_decay,
             "lr_scale": scale[kind], "lr": config.lr * scale[kind]} for kind, ps in groups.items() if ps]


def train_one(job: dict[str, Any], config: SweepConfig, device: str = "cpu") -> dict[str, Any]:
    """Train one model of ``job``'s shape for its steps (:meth:`SweepConfig.steps_for`) on ``device`` (in
    ``config.dtype``); its result line (held-out loss etc.). Batches are drawn on the CPU, so the data order
    is the device's."""
    import torch

    from ..core.runtime import seed_everything, synchronize
    from .model import GPT

    data = data_source(config)
    seed_everything(job["seed"])
    model = GPT(data.vocab, config.seq_len, job["depth"], job["width"], job["heads"])
    assert model.non_embedding_parameters() == job["non_embedding"]
    model.to(device)  # float32 master weights whatever config.dtype (autocast computes in it)
    opt = torch.optim.AdamW(param_groups(model, config, job["width"]), lr=config.lr, betas=(0.9, 0.95))
    draw = data.sampler(job["seed"])
    steps = config.steps_for(job["non_embedding"])
    t0 = time.perf_counter()
    train_losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.lr, config.warmup_steps, steps) * group["lr_scale"]
        batch = draw(config.batch_size, config.seq_len).to(device)
        with _autocast(device, config.dtype):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_losses.append(loss.item())
    synchronize(device)
    train_s = time.perf_counter() - t0
    tail = max(1, len(train_losses) // 10)
    tokens = steps * config.batch_size * config.seq_len
    return {**job, "vocab": data.vocab, "total_parameters": sum(p.numel() for p in model.parameters()),
            "tokens": tokens, "steps": steps, "hidden_lr": config.lr * config.lr_scale(job["width"]),
            "train_loss": float(np.mean(train_losses[-tail:])),
            "heldout_loss": heldout_loss(model, data.heldout(config.seq_len, config.eval_tokens), device=device,
                                         dtype=config.dtype),
            "train_seconds": round(train_s, 2), "tokens_per_second": round(tokens / train_s, 1),
            "threads": torch.get_num_threads(), "device": device, "dtype": config.dtype, **machine(device)}


def train_job(args: Mapping[str, Any]) -> dict[str, Any]:
    """The grid's job function: ``args`` holds the ``job`` (a :func:`grid` entry), the sweep ``config``
    (as a dict) and the ``device``; returns :func:`train_one`'s result line."""
    return train_one(dict(args["job"]), SweepConfig(**args["config"]), args["device"])


# ---------------------------------------------------------------- the resumable sweep


def recipe(config: SweepConfig) -> dict[str, Any]:
    """What every model of a sweep folder shares: the config without the grid (which may grow between
    runs into the same folder), the worker count and GPU share (which change speed, not results). The device
    is not in it either (a sweep started on the CPU resumes on a GPU); the fields added later (dtype, source,
    ...: :data:`NEW_FIELDS`) are, but only when not at their defaults, so that older folders still resume."""
    return {k: v for k, v in asdict(config).items()
            if k not in GRID_FIELDS and not (k in NEW_FIELDS and v == NEW_FIELDS[k])}


def results_log(folder: str | Path) -> GridLog:
    """The log of the sweep in ``folder``: ``results.jsonl``, one line per model, keyed by ``key``."""
    return GridLog(Path(folder) / RESULTS, "depth sweep", key="key", fields=RESULT_FIELDS)


def run_sweep(config: SweepConfig, out: str | Path, *, workers: int | None = None, threads: int = 1,
              backend: str = "local", ray_address: str | None = None, progress: bool = True,
              quiet: bool = False, limit: int | None = None,
              on_result: Callable[[dict[str, Any]], None] | None = None, overwrite: bool = False,
              device: str = "cpu") -> list[dict[str, Any]]:
    """Train every job of ``config`` not yet in ``out/results.jsonl``, appending one line per model.

    ``out`` is a resumable run folder (:func:`attnlab.core.outputs.run_dir`): rerun with the same recipe it
    skips finished jobs (and trains the new ones when the grid grew); a folder holding another recipe is
    refused unless ``overwrite``, which starts it afresh. The jobs run on :func:`attnlab.core.grid.run_grid`
    (``workers`` processes, default the config's, or Ray with ``backend="ray"``; ``threads`` torch threads
    each; several processes may share ``out``), each on ``device`` (the caller's
    :func:`attnlab.core.runtime.choose_device`); ``limit`` trains at most that many new models. Returns the
    result lines of the config's grid, in grid order.
    """
    from ..core.outputs import run_dir

    entries = grid(config)  # shapes and the text source are checked before the folder is touched
    check_source(config)
    out, _ = run_dir(out, recipe(config), overwrite, what="depth sweep", quiet=quiet)
    cfg = asdict(config)
    atomic_write_json(out / CONFIG, cfg)
    gpus = config.gpu_share if device.startswith("cuda") else 0.0
    jobs = [Job(e["key"], {"job": e, "config": cfg, "device": device}, cpus=1, gpus=gpus) for e in entries]
    log = results_log(out)
    todo = jobs
    if limit is not None:  # the first ``limit`` unfinished jobs, with the finished ones for the progress bar
        done = log.results()
        chosen = [j.key for j in jobs if j.key not in done][:limit]
        todo = [j for j in jobs if j.key in done or j.key in chosen]
    run_grid(train_job, todo, log, workers=workers or config.workers, threads=threads, backend=backend,
             ray_address=ray_address, progress=progress, quiet=quiet, desc="depth sweep", unit="model",
             postfix=lambda row: f"{row['key']} loss {row['heldout_loss']:.3f}", on_result=on_result, device=device)
    rows = log.results(report=False)
    return [rows[j.key] for j in jobs if j.key in rows]


# ---------------------------------------------------------------- analysis


def analyze(results: Mapping[str, dict[str, Any]], bootstrap: int = 2000, seed: int = 0,
            design: list[int] | None = None) -> dict[str, Any]:
    """Per budget: mean/std held-out loss per depth over seeds, the best depth, how often each depth
    wins when one seed is resampled per (budget, depth) (bootstrap), and the depth the paper's law
    predicts for the budget. Then the fit ``ln d* = a + b L*`` over the budgets' best shapes (when
    they differ in depth), next to Levine et al.'s (5.039, 0.0555).

    ``results`` maps each model's key to its result line (``results_log(folder).results()``: a model
    logged twice counts once); ``design``, the sweep's configured depths, tells the slope analysis which seeds
    are complete (:func:`attnlab.depth.slope.analyze_slope`)."""
    if not results:
        raise AttnlabError("no sweep results to analyse (run `attnlab depth sweep` first)")
    rows = list(results.values())
    rng = np.random.default_rng(seed)
    budgets = []
    for budget in sorted({r["budget"] for r in rows}):
        by_depth: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            if r["budget"] == budget:
                by_depth.setdefault(r["depth"], []).append(r)
        depths = sorted(by_depth)
        losses = [np.array([r["heldout_loss"] for r in by_depth[L]]) for L in depths]
        means = np.array([x.mean() for x in losses])
        best = int(np.argmin(means))
        paper_L = fit_depth_for_budget(budget)
        draws = np.array([[rng.choice(x) for x in losses] for _ in range(bootstrap)])
        wins = np.bincount(draws.argmin(axis=1), minlength=len(depths)) / bootstrap
        budgets.append({
            "budget": budget,
            "depths": [{"depth": L, "width": by_depth[L][0]["width"], "heads": by_depth[L][0]["heads"],
                        "non_embedding": by_depth[L][0]["non_embedding"], "seeds": len(x),
                        "mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None,
                        "p_best": float(w)} for L, x, w in zip(depths, losses, wins, strict=True)],
            "best_depth": depths[best], "best_width": by_depth[depths[best]][0]["width"],
            "best_p": float(wins[best]),
            # what the paper's law, extrapolated, predicts for this budget (continuous L*, d*)
            "paper_depth": paper_L, "paper_width": optimal_width(paper_L),
        })
    best = [(b["best_depth"], b["best_width"]) for b in budgets]
    fit = None
    if len({L for L, _ in best}) >= 2:
        b, a = np.polyfit([L for L, _ in best], [math.log(d) for _, d in best], 1)
        fit = {"a": float(a), "b": float(b)}
    from .slope import analyze_slope

    return {"budgets": budgets, "fit": fit, "paper_fit": {"a": 5.039, "b": 0.0555},
            "slope": analyze_slope(results, bootstrap, seed, design),
            "models": len(rows), "seeds": sorted({r["seed"] for r in rows})}


def source_summary(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the grammar of a synthetic sweep says about its held-out windows (the exact best loss and the unigram
    entropy), from the folder's ``config.json``; None for text or without a config."""
    if not isinstance(config, dict) or config.get("source") != "hmm":
        return None  # a text source describes itself by its name, already in the config
    known = {f.name for f in fields(SweepConfig)}
    cfg = SweepConfig(**{k: v for k, v in config.items() if k in known})
    return data_source(cfg).describe(cfg.seq_len, cfg.eval_tokens)


def summarize(sweep_dir: str | Path, command: str, seed: int = 0, save_record: bool = True,
              dest: str | Path | None = None) -> RunRecord:
    """Analyse ``sweep_dir/results.jsonl`` (the first line per key; lines that are not result lines are
    named on stderr and skipped); write ``summary.json``, ``sweep.png`` and (``save_record``)
    ``record.json`` into ``dest`` (default: the sweep folder itself)."""
    import json

    from ..core.records import RunRecord  # noqa: F811 (runtime import; the one above is for typing)

    sweep_dir = Path(sweep_dir)
    out = Path(dest) if dest is not None else sweep_dir
    results = results_log(sweep_dir).results()
    if not results:
        raise AttnlabError(f"no sweep results in {sweep_dir} (expected {sweep_dir / RESULTS}; run `attnlab depth "
                           "sweep`)")
    config: dict[str, Any] = {}
    if (sweep_dir / CONFIG).exists():
        try:
            config = json.loads((sweep_dir / CONFIG).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AttnlabError(f"{sweep_dir / CONFIG}: not valid JSON (rerun the sweep into a new folder)") from None
    if isinstance(config, dict):  # the precision of the recipe; the device(s) the models were trained on
        config.setdefault("dtype", "float32")  # rows written before devices existed were trained on the CPU
        config["device"] = ", ".join(sorted({str(r.get("device", "cpu")) for r in results.values()}))
    design = config.get("depths") if isinstance(config, dict) else None
    summary = analyze(results, seed=seed, design=design if isinstance(design, list) else None)
    data = source_summary(config)
    if data is not None:
        summary["data"] = data
    atomic_write_json(out / "summary.json", summary)
    rec = RunRecord(name="depth-sweep", title="depth: fixed-budget depth sweep", command=command, seed=seed,
                    config=config)
    unit = "nats/char" if config.get("source", "text") == "text" else "nats/token"
    rec.add_table(f"Held-out loss ({unit}) per budget and depth: mean +- std over seeds; p_best = share of "
                  "bootstrap draws (one seed per cell) in which that depth wins",
                  ["budget", "depth", "width", "heads", "non-emb params", "seeds", "mean loss", "std", "p_best"],
                  [[b["budget"], r["depth"], r["width"], r["heads"], r["non_embedding"], r["seeds"],
                    round(r["mean"], 4), None if r["std"] is None else round(r["std"], 4), round(r["p_best"], 3)]
                   for b in summary["budgets"] for r in b["depths"]])
    rec.add_table("Best depth per budget (bootstrap share p_best) against Levine et al.'s law extrapolated "
                  "to the budget (continuous L*, d* with 12 L d*^2 = N)",
                  ["budget", "best depth", "its width", "p_best", "paper L*", "paper d*"],
                  [[b["budget"], b["best_depth"], b["best_width"], round(b["best_p"], 3), round(b["paper_depth"], 2),
                    round(b["paper_width"])] for b in summary["budgets"]])
    from .slope import SLOPE_COLUMNS, slope_rows, slope_text

    rec.add_table("L* per budget: the minimum of a parabola in ln L fitted to the loss curve (per complete seed, "
                  "and of the mean curve with a 95% bootstrap over seeds) against Levine et al.'s L* for the budget",
                  SLOPE_COLUMNS, slope_rows(summary["slope"]))
    for b in summary["budgets"]:
        rec.metrics[f"best_depth_N{b['budget']}"] = b["best_depth"]
    for b in summary["slope"]["budgets"]:
        rec.metrics[f"L_star_N{b['budget']}"] = round(b["L_star"], 2)
    rec.metrics["slope"] = slope_text(summary["slope"])
    if data is not None and "bayes_loss" in data:
        rec.metrics["bayes_loss"] = round(data["bayes_loss"], 4)
        rec.metrics["unigram_entropy"] = round(data["unigram_entropy"], 4)
    if summary["fit"]:
        rec.metrics["fit_a"], rec.metrics["fit_b"] = round(summary["fit"]["a"], 3), round(summary["fit"]["b"], 4)
    rec.metrics["models"] = summary["models"]
    from .plots import sweep_figure

    rec.add_figure(sweep_figure(summary, out / "sweep.png").resolve(),
                   "Left: held-out loss against depth at each budget (error bars: std over seeds; dotted: "
                   "Levine et al.'s L* for the budget). Middle: L* per budget with its bootstrap interval, the "
                   "paper's L*(N) and the zero-slope alternative. Right: the best shape per budget against "
                   "ln d* = 5.039 + 0.0555 L.")
    if save_record:
        rec.save(out / "record.json")
    return rec
