"""How many tokens of held-out natural text one prompt of m vectors makes a frozen causal LM reproduce exactly
(issue 14, item 5; the setting of Kuratov et al. 2025, "Cramming 1568 tokens into a single vector and back again").

Prompt tuning as in Lester et al. 2021 and Kuratov et al.: m trainable vectors are prepended to the input
embeddings of a text t_1..t_N, the model stays frozen. The text is memorized when the teacher-forced argmax over
the whole vocabulary equals every next token: t_1 from the prompt alone, t_k from the prompt and t_1..t_{k-1}
(:func:`~attnlab.memorize.tune.exact_match`). For greedy decoding that is the same as reproducing the text:
:func:`generated` checks it with transformers' own ``generate`` (no KV cache).

The capacity of one (m, seed) is the largest N whose first N tokens memorize within the step budget
(:func:`largest_passing`: :func:`~attnlab.memorize.statistic.smallest_length` on failure, doubling then
bisection). A prompt that memorizes N tokens memorizes every prefix (the model is causal), so passing is
monotone in N for the best prompt; for a prompt found by a fixed budget of Adam steps it is an assumption, as
in every search of this package.

Seed i draws a text sample (a random window of held-out text, :func:`sample_window`) and the prompt's initial
draw from two streams of its own. Finished searches are the rows of a :mod:`attnlab.core.grid` log, so a run
resumes; every probe is logged too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..core.atomic import append_jsonl
from ..core.errors import AttnlabError, require
from ..core.grid import NUMBER, GridLog, Job, run_grid
from .statistic import smallest_length

T = TypeVar("T")

#: The prompt lengths of item 5.
M_VALUES = (1, 2, 4, 8, 16)
RUN_KIND = "memorize capacity run"
RESULTS = "results.jsonl"
PROBES = "probes.jsonl"
PROMPTS = "prompts"
#: The text sample's stream (numpy SeedSequence entropy [TEXT_STREAM, seed]); the prompt's is torch's generator.
TEXT_STREAM = 14_5
_ROW_FIELDS = {"m": int, "seed": int, "capacity": int, "censored": bool, "steps": int, "n_probes": int,
               "probe_seconds": NUMBER}


@dataclass(frozen=True)
class CapacityConfig:
    """One capacity run: the model, the prompt lengths, how many seeds, the optimiser and the search range.
    The optimiser is Adam with gradient clipping (:func:`~attnlab.memorize.tune.train_until_exact`), the
    prompt drawn N(0, s^2) with s the std of the model's input embeddings (Kuratov et al.'s init)."""

    model: str = "smollm2"
    ms: tuple[int, ...] = M_VALUES
    seeds: int = 3
    max_steps: int = 200
    lr: float = 0.01
    clip: float = 1.0
    n_max: int = 512
    n_start: int = 16
    n_step: int = 1
    text: str = "builtin"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        require(bool(self.ms) and all(isinstance(m, int) and m >= 1 for m in self.ms)
                and len(set(self.ms)) == len(self.ms), f"--m needs distinct positive integers, got {list(self.ms)}")
        require(self.seeds >= 1, f"--seeds must be at least 1, got {self.seeds}")
        require(self.n_max >= 2, f"--n-max must be at least 2 tokens, got {self.n_max}")
        require(1 <= self.n_start <= self.n_max, f"--n-start must be in 1..n_max={self.n_max}, got {self.n_start}")
        require(1 <= self.n_step <= self.n_max, f"--n-step must be in 1..n_max={self.n_max}, got {self.n_step}")
        require(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a finite number > 0, got {self.lr}")
        require(math.isfinite(self.clip) and self.clip > 0, f"--clip must be a finite number > 0, got {self.clip}")
        require(self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}")

    def tune(self, init_std: float):
        """The :class:`~attnlab.memorize.tune.TuneConfig` of every fit (imported here: it brings torch)."""
        from .tune import TuneConfig

        return TuneConfig(lr=self.lr, clip=self.clip, max_steps=self.max_steps, prompt_init_std=init_std)

    def identity(self) -> dict[str, Any]:
        """What makes two runs one (the folder's marker): everything but the m values and the seed count, which
        only say which jobs to run, so a rerun with more m or more seeds adds jobs to the same folder."""
        return {k: v for k, v in asdict(self).items() if k not in ("ms", "seeds")}


def largest_passing(memorizes: Callable[[int], T | None], n_max: int, n_start: int = 1,
                    n_step: int = 1) -> tuple[int, T | None]:
    """The largest length N, a multiple of ``n_step`` up to ``n_max``, for which ``memorizes(N)`` is not None,
    and what it returned there; (0, None) when N = ``n_step`` fails. The smallest failing multiple is found by
    :func:`~attnlab.memorize.statistic.smallest_length` (doubling from the multiple nearest ``n_start``, then
    bisection); the answer is the multiple below it, or the largest multiple up to ``n_max`` when none fails.
    ``n_step`` > 1 trades resolution for probes (the answer is within ``n_step`` - 1 of the exact one)."""
    require(n_step >= 1 and n_max >= n_step, f"n_step must be in 1..n_max={n_max}, got {n_step}")
    units = n_max // n_step
    passed: dict[int, T] = {}

    def fails(k: int) -> bool | None:
        got = memorizes(k * n_step)
        if got is None:
            return True
        passed[k] = got
        return None

    first_fail, _ = smallest_length(fails, units, min(max(round(n_start / n_step), 1), units))
    k = units if first_fail is None else first_fail - 1
    return k * n_step, passed.get(k)


def sample_window(lengths: Sequence[int], n_tokens: int, seed: int) -> tuple[int, int]:
    """(document index, token offset) of a window of ``n_tokens`` tokens: a document drawn uniformly among those
    at least that long, the offset uniformly inside it, from the text stream of ``seed``."""
    long = [i for i, n in enumerate(lengths) if n >= n_tokens]
    require(bool(long), f"no document of the text has {n_tokens} tokens (the longest has {max(lengths, default=0)}; "
                        "lower --n-max)")
    rng = np.random.default_rng([TEXT_STREAM, seed])
    doc = long[int(rng.integers(len(long)))]
    return doc, int(rng.integers(lengths[doc] - n_tokens + 1))


def heldout_tokens(tokenizer, source: str = "builtin") -> tuple[list[str], list[list[int]]]:
    """The held-out documents of ``source`` (never the calibration split) and their token ids, without special
    tokens."""
    from ..core.text import load_texts

    docs = load_texts(source, "heldout")
    return docs, [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]


def fit_text(model, tokens, m: int, tune, seed: int) -> tuple[dict[str, Any], Any]:
    """Fit m prompt vectors so that ``model`` predicts every token of ``tokens`` (N,) by teacher-forced argmax
    (t_1 from the prompt alone): the fit's summary (memorized, steps, accuracies, loss, seconds, and the smallest
    logit margin of the prompt returned) and that prompt (m, d), the one checked at the last step."""
    import torch

    from .tune import draw_prompt, min_margin, train_until_exact

    emb = model.get_input_embeddings()
    weight = emb.weight
    targets = tokens.reshape(1, -1).to(weight.device)
    n = targets.shape[1]
    prompt = draw_prompt(m, weight.shape[1], seed, tune.prompt_init_std).to(weight.device, weight.dtype)[None]
    prompt.requires_grad_(True)
    with torch.no_grad():
        inputs = emb(targets[:, :-1])

    def logits():
        # positions m-1 .. m+N-2 (the last N) predict t_1..t_N
        return model(inputs_embeds=torch.cat([prompt, inputs], 1), use_cache=False, logits_to_keep=n).logits

    run = train_until_exact([prompt], logits, targets, tune)
    with torch.no_grad():
        run["min_margin"] = min_margin(logits(), targets)
    return run, prompt.detach()[0]


def generated(model, prompt, n: int) -> list[int]:
    """The ``n`` tokens transformers' greedy ``generate`` emits after the prompt vectors alone (``inputs_embeds``,
    no KV cache); fewer when it emits an end-of-sequence token first."""
    import warnings

    import torch

    weight = model.get_input_embeddings().weight
    pad = model.generation_config.pad_token_id
    pad = model.generation_config.eos_token_id if pad is None else pad
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generation-config notices (the checkpoint's sampling defaults)
        out = model.generate(inputs_embeds=prompt[None].to(weight.device, weight.dtype), max_new_tokens=n,
                             do_sample=False, use_cache=False, pad_token_id=pad if isinstance(pad, int) else 0,
                             attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.long, device=weight.device))
    return out[0].tolist()


def prompt_file(out_dir: Path, m: int, seed: int) -> Path:
    return out_dir / PROMPTS / f"m{m}-seed{seed}.safetensors"


def save_prompt(path: Path, prompt, tokens, info: Mapping[str, Any]) -> None:
    """The memorizing prompt (m, d) float32 and the text's token ids (N,) int64 as safetensors, ``info`` as its
    string metadata; written atomically."""
    from safetensors.torch import save_file

    from ..core.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"prompt": prompt.detach().cpu().float().contiguous(), "tokens": tokens.cpu().contiguous()},
                  str(tmp), metadata={k: str(v) for k, v in info.items()})


def check_saved(model, path: str | Path) -> dict[str, Any]:
    """Whether the prompt saved at ``path`` makes greedy ``generate`` reproduce its text: the tokens reproduced
    before the first difference, and exact (all of them)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    want = tensors["tokens"].tolist()
    got = generated(model, tensors["prompt"], len(want))
    agree = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return {"generated_exact": got[:len(want)] == want, "generated_prefix": agree, "n_tokens": len(want)}


_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def load(spec: str, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) of ``spec`` on ``device``, frozen, loaded once per process (the jobs of a run share
    it)."""
    if (spec, dtype, device) not in _LOADED:
        from ..core.hf import load_causal_lm

        model, tokenizer = load_causal_lm(spec, dtype)
        model.requires_grad_(False)
        _LOADED[(spec, dtype, device)] = model.to(device), tokenizer
    return _LOADED[(spec, dtype, device)]


def job_key(m: int, seed: int) -> str:
    return f"m={m},seed={seed}"


def search_one(config: CapacityConfig, m: int, seed: int, out_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """The capacity of (m, seed): the search, every probe appended to ``out_dir/probes.jsonl``, the memorizing
    prompt at the capacity saved under ``out_dir/prompts`` and checked with ``generate``; returns the row."""
    import torch

    from ..core.text import document_hash

    model, tokenizer = load(config.model, config.dtype, device)
    docs, ids = heldout_tokens(tokenizer, config.text)
    doc, offset = sample_window([len(t) for t in ids], config.n_max, seed)
    window = torch.tensor(ids[doc][offset:offset + config.n_max], dtype=torch.long)
    tune = config.tune(float(model.get_input_embeddings().weight.float().std()))
    key = job_key(m, seed)
    probes: list[dict[str, Any]] = []

    def memorizes(n: int):
        run, prompt = fit_text(model, window[:n], m, tune, seed)
        probe = {"key": key, "m": m, "seed": seed, "n": n, **run}
        append_jsonl(out_dir / PROBES, probe)
        probes.append(probe)
        return (probe, prompt) if run["memorized"] else None

    capacity, win = largest_passing(memorizes, config.n_max, config.n_start, config.n_step)
    row: dict[str, Any] = {"m": m, "seed": seed, "text_seed": seed, "prompt_seed": seed, "capacity": capacity,
                           "censored": capacity + config.n_step > config.n_max, "tokens_per_vector": capacity / m,
                           "n_probes": len(probes), "probe_seconds": round(sum(p["seconds"] for p in probes), 3),
                           "document": document_hash(docs[doc]), "offset": offset,
                           "text": tokenizer.decode(window[:capacity].tolist()), "steps": 0, "loss": None,
                           "min_margin": None, "prompt_file": None, "generated_exact": None, "generated_prefix": 0,
                           "device": device, "threads": torch.get_num_threads()}
    if win is not None:
        probe, prompt = win
        path = prompt_file(out_dir, m, seed)
        save_prompt(path, prompt, window[:capacity], {"model": config.model, "m": m, "seed": seed,
                                                       "n_tokens": capacity, "document": row["document"],
                                                       "offset": offset})
        row.update(steps=probe["steps"], loss=probe["loss"], min_margin=probe["min_margin"],
                   prompt_file=str(path.relative_to(out_dir)))
        check = check_saved(model, path)
        row.update(generated_exact=check["generated_exact"], generated_prefix=check["generated_prefix"])
    return row


def _job(args: Mapping[str, Any]) -> dict[str, Any]:
    config = CapacityConfig(**{**args["config"], "ms": tuple(args["config"]["ms"])})
    return search_one(config, args["m"], args["seed"], Path(args["out"]), args["device"])


def results_log(out_dir: str | Path) -> GridLog:
    return GridLog(Path(out_dir) / RESULTS, RUN_KIND, key="key", fields=_ROW_FIELDS)


def run_capacity(config: CapacityConfig, out_dir: str | Path, overwrite: bool = False, progress: bool = True,
                 quiet: bool = False, threads: int | None = 1, device: str = "cpu",
                 **grid: Any) -> list[dict[str, Any]]:
    """Every (m, seed) of ``config`` into the run folder ``out_dir`` (rerun to resume: finished searches are
    skipped; more m values or seeds add jobs; other settings are refused); returns every finished row of the
    folder, sorted by (m, seed). ``grid`` goes to :func:`~attnlab.core.grid.run_grid` (workers, backend)."""
    from ..core.hf import load_tokenizer
    from ..core.outputs import run_dir

    ids = heldout_tokens(load_tokenizer(config.model), config.text)[1]
    for seed in range(config.seeds):  # a text too short for n_max is a one-line error before the folder is made
        sample_window([len(t) for t in ids], config.n_max, seed)
    out, _ = run_dir(out_dir, config.identity(), overwrite, what=RUN_KIND, quiet=quiet)
    jobs = [Job(job_key(m, s), {"config": asdict(config), "m": m, "seed": s, "out": str(out),
                                    "device": device})
            for m in sorted(config.ms) for s in range(config.seeds)]
    run_grid(_job, jobs, results_log(out), threads=threads, progress=progress, quiet=quiet, desc="memorize capacity",
             unit="search", postfix=lambda r: f"m={r['m']} seed={r['seed']} N={r['capacity']}", device=device,
             **grid)
    return rows(out)


def rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """The finished (m, seed) rows of a run folder, sorted by (m, seed)."""
    return sorted(results_log(out_dir).results().values(), key=lambda r: (r["m"], r["seed"]))


def summarize(rows: Sequence[Mapping[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Per m: the capacity of each seed, their mean, a Student-t interval of the mean (with >= 3 seeds; None
    otherwise), tokens per vector, whether any seed reached n_max (a lower bound only), and the gain over the
    previous m paired by seed (the same text window at every m): the mean difference with its t interval over
    the seeds that have both (interval with >= 3 of them)."""
    from ..core.stats import mean_t_interval

    out: list[dict[str, Any]] = []
    for m in sorted({r["m"] for r in rows}):
        rs = sorted((r for r in rows if r["m"] == m), key=lambda r: r["seed"])
        t = mean_t_interval([float(r["capacity"]) for r in rs], level)
        mean = t["mean"]
        ci = [t["low"], t["high"]] if t["n"] >= 3 else None
        by_seed = {r["seed"]: r["capacity"] for r in rs}
        gain = None
        if out:
            before = dict(zip(out[-1]["seeds"], out[-1]["capacity"], strict=True))
            diffs = [float(by_seed[s] - before[s]) for s in by_seed if s in before]
            if diffs:
                g = mean_t_interval(diffs, level)
                gain = {"from_m": out[-1]["m"], "n": g["n"], "mean": g["mean"],
                        "ci": [g["low"], g["high"]] if g["n"] >= 3 else None}
        out.append({"m": m, "seeds": list(by_seed), "capacity": list(by_seed.values()), "mean": mean,
                    "ci": ci, "tokens_per_vector": mean / m, "censored": any(r["censored"] for r in rs),
                    "generated_exact": all(r["generated_exact"] for r in rs if r["capacity"] > 0), "gain": gain})
    return out


def plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Tokens reproduced against m (log2 axes): each seed's capacity (a capacity of 0 drawn at 1/2) and the mean."""
    from ..core.plots import plt, save_figure

    table = summarize(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for seed in sorted({r["seed"] for r in rows}):
        rs = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["m"])
        ax.plot([r["m"] for r in rs], [max(r["capacity"], 0.5) for r in rs], "o", alpha=0.5, label=f"seed {seed}")
    ax.plot([t["m"] for t in table], [t["mean"] for t in table], "k-", lw=2, label="mean")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("prompt vectors m")
    ax.set_ylabel("tokens reproduced exactly (0 is drawn at 1/2)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def check_run_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if not (out_dir / RESULTS).is_file():
        raise AttnlabError(f"{out_dir} is not a memorize capacity folder (no {RESULTS}; see `attnlab memorize "
                           "capacity --help`)")
    return out_dir
