"""Figures, summary tables and the run record of a sweep directory: m* against n_pairs*seq_len (log-log,
with the sqrt law and a free power law), against generation steps T, against rank and against the backbone
init."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import require
from ..core.plots import plt, save_figure
from ..core.records import RunRecord
from ..core.stats import mean_t_interval
from .sweep import check_sweep_dir, folder_config, results
from .theory import fit_power_law, fit_sqrt_law, sqrt_bound, tradeoff_products


def _rows(rows: list[dict[str, Any]], experiment: str) -> list[dict[str, Any]]:
    return [r for r in rows if experiment in r.get("experiments", [])]


def _label_init(s: dict[str, Any]) -> str:
    return s["init"] if s["init"] in ("identity", "trained") else f"{s['init']} x{s['gain']:g}"


def _rank_of(s: dict[str, Any]) -> int:
    """The label rank as a number: random labels are full rank (``n_classes``)."""
    return s["rank"] if s["rank"] is not None else s["n_classes"]


def _label_rank(s: dict[str, Any]) -> str:
    return str(s["rank"]) if s["rank"] is not None else f"random ({s['n_classes']})"


#: How the tables name each experiment's setting (and how an lr grid groups its rows: by setting and seed).
_LABELS = {"n_pairs": lambda s: str(s["n_pairs"]), "seq_len": lambda s: str(s["seq_len"]),
           "gen_steps": lambda s: str(s["gen_steps"]), "rank": _label_rank, "init": _label_init}


def _lr_grid(rs: list[dict[str, Any]]) -> list[float]:
    """The prompt lrs the rows were fitted at, when more than one (a per-setting lr grid); else []."""
    lrs = sorted({r["settings"]["lr"] for r in rs})
    return lrs if len(lrs) > 1 else []


def _best_over_lr(rs: list[dict[str, Any]], label) -> list[dict[str, Any]]:
    """Per setting and seed, the row of the lr with the smallest m* (a failure counts as larger than any m*;
    ties go to the smaller lr), in the rows' order: the lr grid makes "the lr was wrong" no reason for an m*."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(rs, key=lambda r: r["settings"]["lr"]):
        k = (label(r["settings"]), r["settings"]["seed"])
        if k not in best or (r["m_star"] or np.inf) < (best[k]["m_star"] or np.inf):
            best[k] = r
    return list(best.values())


def _chosen(rows: list[dict[str, Any]], experiment: str) -> list[dict[str, Any]]:
    """An experiment's rows as the fits and plots use them: with an lr grid, each setting and seed at its best lr."""
    rs = _rows(rows, experiment)
    return _best_over_lr(rs, _LABELS[experiment]) if _lr_grid(rs) else rs


def _lr_table(rs: list[dict[str, Any]], label, lrs: list[float]) -> list[list[Any]]:
    """Rows ``[setting, seed, m* at each lr..., best m*, its lr]`` (None: none up to m_max)."""
    cells = {(label(r["settings"]), r["settings"]["seed"], r["settings"]["lr"]): r["m_star"] for r in rs}
    out = []
    for r in _best_over_lr(rs, label):
        name, seed = label(r["settings"]), r["settings"]["seed"]
        out.append([name, seed, *(cells.get((name, seed, lr)) for lr in lrs), r["m_star"],
                    r["settings"]["lr"] if r["m_star"] else None])
    return out


def _paired(best: list[dict[str, Any]], label) -> list[list[Any]]:
    """Each setting against the first (the config's first variant), paired by seed: rows ``[setting, pairs,
    geometric-mean ratio of m*, its 95% t interval low, high, seeds left out]``. The ratio's mean and interval are
    of log(m* / m*_first) over the seeds where both have an m* (a failure has no ratio: those seeds are counted,
    not imputed); no interval from fewer than two pairs."""
    by = {(label(r["settings"]), r["settings"]["seed"]): r["m_star"] for r in best}
    names = list(dict.fromkeys(label(r["settings"]) for r in best))
    seeds = sorted({r["settings"]["seed"] for r in best})
    out = []
    for name in names[1:]:
        logs = [math.log(by[name, s] / by[names[0], s]) for s in seeds
                if by.get((name, s)) and by.get((names[0], s))]
        if not logs:
            out.append([name, 0, None, None, None, len(seeds)])
            continue
        t = mean_t_interval(logs)
        out.append([name, t["n"], round(math.exp(t["mean"]), 3),
                    *(round(math.exp(t[k]), 3) if t[k] is not None else None for k in ("low", "high")),
                    len(seeds) - t["n"]])
    return out


def _pm(rows: list[dict[str, Any]]) -> bool:
    """Whether the rows are p(m) estimates (``prompt_seeds`` set): m_star is m*_q, with an interval."""
    return any("ci" in r for r in rows)


def _pm_cells(r: dict[str, Any]) -> list[Any]:
    """A p(m) row's interval of m*_q and its m*_q at the short budget (None: none up to m_max)."""
    lo, hi = r["ci"]
    return [f"{lo}..{hi if hi is not None else '>m_max'}" if lo is not None else ">m_max", r.get("m_star_short")]


def _yerr(rs: list[dict[str, Any]]) -> np.ndarray | None:
    """Asymmetric error bars (2, n) of m*_q from each row's interval (an open end drawn at m_max)."""
    if not _pm(rs):
        return None
    lo = [r["m_star"] - (r["ci"][0] or r["m_star"]) for r in rs]
    hi = [(r["ci"][1] or r["settings"]["m_max"]) - r["m_star"] for r in rs]
    return np.array([lo, hi], dtype=float)


def summarize(rows: list[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Fits and per-experiment tables from sweep result lines (see :func:`attnlab.memorize.sweep.results`)."""
    out: dict[str, Any] = {"tables": {}, "p_of_m": _pm(rows),
                           "lr_grid": {exp: _lr_grid(_rows(rows, exp)) for exp in _LABELS}}
    scaling = [r for r in _chosen(rows, "n_pairs") + _chosen(rows, "seq_len") if r["m_star"]]
    scaling = list({r["point"]: r for r in scaling}.values())
    if len({r["settings"]["n_pairs"] * r["settings"]["seq_len"] for r in scaling}) >= 2:
        K = np.array([r["settings"]["n_pairs"] * r["settings"]["seq_len"] for r in scaling], dtype=float)
        m = np.array([r["m_star"] for r in scaling], dtype=float)
        law = fit_power_law(K, m, n_boot=n_boot, seed=seed)
        out["power_law"] = {"alpha": law.alpha, "a": law.a, "ci95": list(law.ci), "n_points": law.n_points}
        out["sqrt_law_c"] = fit_sqrt_law(K, m)
        out["sqrt_log_law_c"] = fit_sqrt_law(K, m, log_power=1.0)
        sqrt_law = sqrt_bound(K, 1, out["sqrt_law_c"])
        out["sqrt_law_rms_log_residual"] = float(np.sqrt(np.mean((np.log(m) - np.log(sqrt_law)) ** 2)))
        out["power_law_rms_log_residual"] = float(np.sqrt(np.mean((np.log(m) - np.log(law(K))) ** 2)))
    # each axis alone: last-position labels carry n_pairs labels, not n_pairs*seq_len
    for exp in ("n_pairs", "seq_len"):
        rs = [r for r in _chosen(rows, exp) if r["m_star"]]
        if len({r["settings"][exp] for r in rs}) >= 2:
            law = fit_power_law([r["settings"][exp] for r in rs], [r["m_star"] for r in rs], n_boot=n_boot, seed=seed)
            out[f"power_law_{exp}"] = {"alpha": law.alpha, "a": law.a, "ci95": list(law.ci), "n_points": law.n_points}
    for exp, label in _LABELS.items():
        lr = bool(out["lr_grid"][exp])
        value = _rank_of if exp == "rank" else lambda s, e=exp: s[e]
        rs = _rows(rows, exp) if exp == "init" else sorted(  # init: in the config's order
            _rows(rows, exp), key=lambda r: (value(r["settings"]), r["settings"]["lr"], r["settings"]["seed"]))
        where = [] if exp == "init" else ["n_pairs", "seq_len"]
        out["tables"][exp] = [[label(r["settings"]) if exp in ("rank", "init") else r["settings"][exp],
                               *([r["settings"]["lr"]] if lr else []), *(r["settings"][k] for k in where),
                               r["m_star"], *(_pm_cells(r) if _pm(rows) else []), r["steps"], r["n_probes"],
                               r["probe_seconds"]] for r in rs]
        if lr:
            out["tables"][f"{exp}_best_lr"] = _lr_table(_rows(rows, exp), label, out["lr_grid"][exp])
    if len({r["settings"]["seed"] for r in _rows(rows, "init")}) >= 2:
        best = _chosen(rows, "init")
        out["tables"]["init_paired"] = _paired(best, _label_init)
        out["init_reference"] = _label_init(best[0]["settings"])
    rs = _chosen(rows, "gen_steps")
    if rs:
        prods = tradeoff_products([r["m_star"] or np.nan for r in rs], [r["settings"]["gen_steps"] for r in rs])
        out["tradeoff_products"] = {r["settings"]["gen_steps"]: float(p) for r, p in zip(rs, prods, strict=True)}
    return out


def _scatter_vs(ax, rs: list[dict[str, Any]], x, m_max_marker: bool = True, what: str = "") -> None:
    """m* of each row at ``x(settings)``, with its interval; failures as red triangles at m_max."""
    ok = [r for r in rs if r["m_star"]]
    ax.errorbar([x(r["settings"]) for r in ok], [r["m_star"] for r in ok], yerr=_yerr(ok), fmt="o-", capsize=3,
                label=("measured m*_0.5 (95% interval)" if _pm(ok) else "measured m*") + what)
    miss = [r for r in rs if not r["m_star"]]
    if miss and m_max_marker:
        ax.plot([x(r["settings"]) for r in miss], [r["settings"]["m_max"] for r in miss], "^", color="red",
                label="none up to m_max")
    ax.set_ylabel("m* (prompt tokens)")
    ax.grid(alpha=0.3)


def plot_sweep(out_dir: str | Path, fig_dir: str | Path | None = None, seed: int = 0,
               n_boot: int = 2000) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """Write the sweep's PNGs into ``fig_dir`` (default: the sweep directory); returns (summary, figures)."""
    rows = results(out_dir)
    require(bool(rows), f"no finished searches in {out_dir} yet")
    fig_dir = Path(fig_dir or out_dir)
    summary = summarize(rows, n_boot=n_boot, seed=seed)
    figures: list[tuple[Path, str]] = []
    budget = rows[0]["settings"]
    note = (f"budget {budget['max_steps']} steps, m*_0.5 over {budget['prompt_seeds']} prompt seeds" if _pm(rows)
            else f"budget {budget['max_steps']} steps x {budget['restarts']} restarts")

    chosen = _chosen(rows, "n_pairs") + _chosen(rows, "seq_len")
    scaling = list({r["point"]: r for r in chosen if r["m_star"]}.values())
    if "power_law" in summary:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for exp, marker in (("n_pairs", "o"), ("seq_len", "s")):
            rs = [r for r in scaling if exp in r["experiments"]]
            if not rs:  # e.g. the tour's quick profile has no seq_len experiment
                continue
            ax.errorbar([r["settings"]["n_pairs"] * r["settings"]["seq_len"] for r in rs], [r["m_star"] for r in rs],
                        yerr=_yerr(rs), fmt=marker, capsize=3, label=f"measured, varying {exp}")
            ax.set_xscale("log")
            ax.set_yscale("log")
        miss = [r for r in chosen if not r["m_star"]]
        if miss:
            ax.loglog([r["settings"]["n_pairs"] * r["settings"]["seq_len"] for r in miss],
                      [r["settings"]["m_max"] for r in miss], "^", color="red", label="none up to m_max (not fitted)")
        K = np.geomspace(min(r["settings"]["n_pairs"] * r["settings"]["seq_len"] for r in scaling),
                         max(r["settings"]["n_pairs"] * r["settings"]["seq_len"] for r in scaling), 50)
        pl = summary["power_law"]
        ax.loglog(K, sqrt_bound(K, 1, summary["sqrt_law_c"]), "--",
                  label=f"paper's law {summary['sqrt_law_c']:.2f}*sqrt(K)")
        ax.loglog(K, sqrt_bound(K, 1, summary["sqrt_log_law_c"], 1.0), ":",
                  label=f"with log factor {summary['sqrt_log_law_c']:.3f}*sqrt(K)*log(K)")
        ax.loglog(K, pl["a"] * K ** pl["alpha"], "-",
                  label=f"power law K^{pl['alpha']:.2f} (95% CI {pl['ci95'][0]:.2f}..{pl['ci95'][1]:.2f})")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor log ticks overlap at this range
        ax.set_xlabel("K = n_pairs * seq_len")
        ax.set_ylabel("m* (prompt tokens)")
        ax.set_title(f"Minimal prompt length for exact memorization ({note})", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        figures.append((save_figure(fig, fig_dir / "mstar_vs_K.png"),
                        "m* against n_pairs*seq_len, log-log, with the fitted sqrt law and a free power law."))
    for exp, x, xlabel, fname in (("gen_steps", lambda s: s["gen_steps"], "generation steps T", "mstar_vs_T.png"),
                                  ("rank", _rank_of, "rank of the label logits (random: n_classes)",
                                   "mstar_vs_rank.png")):
        grid = summary["lr_grid"][exp]
        rs = sorted(_chosen(rows, exp), key=lambda r: x(r["settings"]))
        if not rs:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        _scatter_vs(ax, rs, x, what=", best of lr " + "/".join(f"{v:g}" for v in grid) if grid else "")
        if exp == "gen_steps":
            T = np.array([r["settings"]["gen_steps"] for r in rs if r["m_star"]], dtype=float)
            if len(T) and rs[0]["m_star"]:
                ax.plot(T, rs[0]["m_star"] / (T + 1), ":", label="hypothesis m* (T+1) = const")
        ax.set_xlabel(xlabel)
        s = rs[0]["settings"]
        ax.set_title(f"m* against {xlabel} (n_pairs={s['n_pairs']}, seq_len={s['seq_len']}; {note})", fontsize=9)
        ax.legend(fontsize=8)
        figures.append((save_figure(fig, fig_dir / fname), f"m* against {xlabel}."))
    rs = _rows(rows, "init")
    if rs:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        grid = summary["lr_grid"]["init"]
        best = _chosen(rows, "init")  # one row per init and seed (with an lr grid: at its best lr)
        labels = list(dict.fromkeys(_label_init(r["settings"]) for r in best))
        m_max = rs[0]["settings"]["m_max"]
        per = [[r["m_star"] for r in best if _label_init(r["settings"]) == name] for name in labels]
        medians = [float(np.median([m or np.inf for m in ms])) for ms in per]  # a failure counts as above m_max
        bars = ax.bar(range(len(labels)), [m if np.isfinite(m) else m_max for m in medians],
                      color=["C0" if np.isfinite(m) else "red" for m in medians], alpha=0.6)
        for i, (b, ms, med) in enumerate(zip(bars, per, medians, strict=True)):
            ax.plot([i] * len(ms), [m or m_max for m in ms], "k.", ms=5)
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{med:g}" if np.isfinite(med) else f">{m_max}",
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("m* (prompt tokens)")
        s = rs[0]["settings"]
        seeds = len({r["settings"]["seed"] for r in best})
        how = (f"median of {seeds} seeds (dots), each the best of lr " + "/".join(f"{v:g}" for v in grid) + "; "
               if grid else f"median of {seeds} seeds (dots); " if seeds > 1 else "")
        ax.set_title(f"m* against backbone init (n_pairs={s['n_pairs']}, seq_len={s['seq_len']}; {how}"
                     "red: none up to m_max)", fontsize=9)
        figures.append((save_figure(fig, fig_dir / "mstar_vs_init.png"), "m* against the backbone initialisation."))
    return summary, figures


def sweep_record(sweep_dir: str | Path, seed: int = 0, n_boot: int = 2000, fig_dir: str | Path | None = None,
                 command: str | None = None) -> RunRecord:
    """A run record (metrics, tables, figures) for a sweep directory; ``command`` reproduces it (default:
    the ``attnlab memorize plot`` of this directory)."""
    config = folder_config(check_sweep_dir(sweep_dir))
    for key in ("device", "dtype"):  # what the searches ran on (logs from before they were recorded: absent)
        seen = sorted({str(r[key]) for r in results(sweep_dir) if key in r})
        if seen:
            config = {**config, key: ", ".join(seen)}
    rec = RunRecord(name="memorize", title="memorize: minimal soft-prompt length for exact memorization",
                    command=command or f"attnlab memorize plot {sweep_dir} --n-boot {n_boot} --seed {seed}",
                    seed=seed, config=config)
    with rec.timed("plot"):
        summary, figures = plot_sweep(sweep_dir, fig_dir, seed=seed, n_boot=n_boot)
    if "power_law" in summary:
        pl = summary["power_law"]
        rec.metrics.update({"power_law_alpha": round(pl["alpha"], 4),
                            "power_law_ci95": [round(x, 4) for x in pl["ci95"]], "power_law_points": pl["n_points"],
                            "sqrt_law_c": round(summary["sqrt_law_c"], 4),
                            "sqrt_log_law_c": round(summary["sqrt_log_law_c"], 4),
                            "sqrt_law_rms_log_residual": round(summary["sqrt_law_rms_log_residual"], 4),
                            "power_law_rms_log_residual": round(summary["power_law_rms_log_residual"], 4)})
    for exp in ("n_pairs", "seq_len"):
        if f"power_law_{exp}" in summary:
            pl = summary[f"power_law_{exp}"]
            rec.metrics[f"alpha_{exp}"] = round(pl["alpha"], 4)
            rec.metrics[f"alpha_{exp}_ci95"] = [round(x, 4) for x in pl["ci95"]]
    pm = ["95% interval", f"m*_0.5 within {config['base'].get('short_steps')} steps"] if summary["p_of_m"] else []
    tail = ["steps", "probes", "probe seconds"]
    for exp in ("n_pairs", "seq_len", "gen_steps", "rank"):
        if summary["tables"].get(exp):
            lr = ["lr"] if summary["lr_grid"].get(exp) else []
            rec.add_table(f"m* against {exp}", [f"[{exp}]", *lr, "n_pairs", "seq_len", "m*", *pm, *tail],
                          summary["tables"][exp])
    if summary["tables"]["init"]:
        lr = ["lr"] if summary["lr_grid"]["init"] else []
        rec.add_table("m* against backbone init", ["init", *lr, "m*", *pm, *tail], summary["tables"]["init"])
    if summary["tables"].get("init_paired"):
        rec.add_table(f"m* against backbone init, paired by seed: ratio to {summary['init_reference']}",
                      ["init", "seeds paired", "m* ratio (geometric mean)", "95% low", "95% high",
                       "seeds without a ratio"], summary["tables"]["init_paired"])
    for exp, lrs in summary["lr_grid"].items():
        if lrs:
            rec.add_table(f"m* against {exp}: each seed at each lr, and the best lr",
                          [exp, "seed", *(f"m* at lr {v:g}" for v in lrs), "best m*", "best lr"],
                          summary["tables"][f"{exp}_best_lr"])
    for path, caption in figures:
        rec.add_figure(Path(path).resolve(), caption)
    if summary["p_of_m"]:
        rec.notes.append("m* is m*_0.5: the smallest prompt length tried at which at least half of the prompt seeds "
                         "memorized exactly (teacher-forced argmax right at every target) within the step budget, "
                         "with a bootstrap interval over the seeds; the short-budget column reads the same fits at "
                         "the shorter budget.")
    else:
        rec.notes.append("m* is the smallest prompt length that memorized exactly (teacher-forced argmax right at "
                         "every target) within the step budget and restarts in the config; it depends on that "
                         "budget, and near m* on the rounding of the machine (one fit per prompt seed).")
    return rec
