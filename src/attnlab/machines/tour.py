"""The machines tour: sizes and certificates of the library, exact runs per executor, the universal machine,
the attention pattern of a run, the two precision plots and throughput.

Two profiles with the same sections: ``quick`` (the default of ``attnlab tour``, about 30 s on 2 cores)
leaves out BB5's 47-million-step and BB(2,4)'s 3.9-million-step reference runs and computes the rounded
closed certificate at fewer windows (W = 4, 1024, 16,384); ``full`` (``attnlab tour --full``) is the complete
version (W up to 100,000, BB5 and BB(2,4) included). Nothing is cached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.plots import plt, save_figure
from ..core.records import RunRecord
from .certificate import certify
from .compile import compile_pm
from .executors import TableExecutor
from .library import LIBRARY, LONG, library_machine
from .machine import PostMachine
from .network import Format
from .post import tm_to_pm
from .precision import precision_sweep, softmax_sweep
from .reference import run_tm
from .simulate import run_machine, token_marks

FORMATS = [Format(1, 0), Format(2, 0), Format(4, 3)]


@dataclass(frozen=True)
class Profile:
    precision_windows: tuple[int, ...]  # W of the rounded-arithmetic check
    softmax_windows: tuple[int, ...]
    skip: tuple[str, ...]  # left out of the sizes table (bb5, bb2x4: 47M- and 3.9M-step reference runs)


PROFILES = {
    "quick": Profile((4, 1024, 16384), (4, 8, 16, 32, 64, 128, 256, 512, 1024), ("bb5", "bb2x4")),
    "full": Profile((4, 16, 64, 256, 1024, 4096, 16384, 100_000),
                    (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), ()),
}

#: Measured on an idle 2-core CPU (`make demo` from a fresh clone; `attnlab tour --full`, model cached):
#: quick 10 s, full 37 s.
EXPECTED_SECONDS = {"quick": 15, "full": 40}


def tour(out_dir: Path, seed: int = 0, full: bool = False) -> RunRecord:
    out_dir = Path(out_dir)
    name = "full" if full else "quick"
    profile = PROFILES[name]
    command = "attnlab tour --only machines" + (" --full" if full else "")
    rec = RunRecord(name="machines", title="machines: Turing machines as constant-bit-size transformers",
                    command=command, seed=seed,
                    config={"profile": name, **asdict(profile), "formats": [f.name for f in FORMATS]})
    with rec.timed("library"):
        _library(rec, profile, command)
    with rec.timed("universal"):
        _universal(rec, command)
    with rec.timed("attention_figure"):
        _attention_figure(rec, out_dir, command)
    with rec.timed("precision"):
        _precision(rec, out_dir, profile, command)
    with rec.timed("softmax"):
        _softmax(rec, out_dir, profile, command)
    with rec.timed("throughput"):
        _throughput(rec, command)
    rec.notes.append("Every run is checked against the reference TM at every completed TM step (decoded "
                     "configuration) and at halt; every network has a complete closed certificate (lemma B over "
                     "every window of every length, the network on all (token, front symbol) pairs). Window "
                     "W = cells visited - 1 from a reference run. One row of the sizes "
                     "table: `attnlab machines certify NAME --json`; of the runs table: `attnlab machines run NAME "
                     "--executor kv --json`.")
    rec.notes.append(f"Profile {name}." + ("" if full else " `attnlab tour --full` (about "
                     f"{EXPECTED_SECONDS['full']} s) adds BB5 and the rounded certificate at W up to 100,000."))
    return rec


def _library(rec: RunRecord, profile: Profile, command: str) -> None:
    rows, runs = [], []
    for name, entry in LIBRARY.items():
        m = library_machine(name)
        if isinstance(m, PostMachine) or name in profile.skip:
            continue
        cells = m.encode(entry.input)
        ref = run_tm(m, cells, 10**8)
        W = max(ref.span - 1, len(cells) - 1, 1)
        model = compile_pm(tm_to_pm(m).pm, W)
        cert = certify(model)
        tokens = (ref.steps - ref.left_moves) + W * ref.left_moves + 1
        rows.append([name, len(m.states), len(m.symbols), W, model.vocab_size, model.d_model, model.d_ffn,
                     model.params, model.bits_per_param, model.model_bits, ref.steps, tokens,
                     "complete" if cert.complete else "; ".join(cert.failures())])
        if name not in LONG:
            r = run_machine(m, entry.input, executor="kv")
            runs.append([name, repr(entry.input), r.final_state, r.tape, r.tm_steps, r.tokens, r.mismatches])
    rec.add_table("Compiled sizes (one layer, one head; weights in {-1,0,1}) and certificates",
                  ["machine", "|Q|", "|Γ|", "W", "vocab", "d_model", "d_ffn", "params", "bits/param", "model bits",
                   "TM steps", "tokens (#R+W#L+1)", "certificate"], rows, command=command)
    rec.add_table("Runs on the kv executor, decoded configuration checked at every TM step",
                  ["machine", "input", "final state", "tape", "TM steps", "tokens", "mismatches"], runs,
                  command=command)
    rec.metrics["library_mismatches"] = sum(r[-1] for r in runs)
    rec.metrics["certified_machines"] = sum(r[-1] == "complete" for r in rows)


def _universal(rec: RunRecord, command: str) -> None:
    """One fixed weight set (Minsky's universal machine) on two tag-system inputs: only W changes."""
    tm = library_machine("utm")
    model = compile_pm(tm_to_pm(tm).pm, 1)
    rows = []
    for word in ("yyAyyAyy", "yyAyyAyyAyyAyy"):  # the word a2 a2 a2, then a2 x5 (even counts never halt)
        text = LIBRARY["utm"].input.replace("yyAyyAyy", word)
        r = run_machine(tm, text, executor="kv", model=model)
        rows.append([text, r.window, r.tm_steps, r.tokens, r.sizes["params"], r.sizes["model_bits"], r.mismatches])
    rec.add_table("Universal machine: the same weights run different programs; only the window grows",
                  ["tape (productions 11 + word)", "W", "TM steps", "tokens", "params", "model bits", "mismatches"],
                  rows, command=command)


def _attention_figure(rec: RunRecord, out_dir: Path, command: str) -> None:
    """Hardmax attention of the nn.Module on a BB4 run (W=13) and the decoded space-time diagram."""
    import torch

    from .module import MachineTransformer

    tm = library_machine("bb4")
    tr = tm_to_pm(tm)
    W = 13
    model = compile_pm(tr.pm, W)
    state, queue = tr.initial_config([], W)
    stream = list(model.prompt(state, queue))
    ex = TableExecutor(model, stream, token_marks(tr, model))
    while not ex.halted:
        ex.advance(1, 1)
        stream.append(ex.cur)
    module = MachineTransformer(model)
    with torch.no_grad():
        att = module.attention(module.embed(torch.tensor([stream])))[0].numpy()  # (T, T) hardmax weights
    T = len(stream)
    off = np.arange(T)[:, None] - np.arange(T)[None, :]
    visible = ((off >= 0) & (off < W)).astype(float)
    # space-time diagram: the decoded tape after each completed TM step, at absolute positions mod W+1
    n_sym, N = model.n_symbols, W + 1
    frames, head = [], 0
    for i in range(W, T):
        s, c = divmod(stream[i], n_sym)
        if tr.is_step(s, c):
            _, cyc, halted = tr.decode(s, [t % n_sym for t in stream[i - W + 1:i + 1]])
            if not halted:
                head += 1 if s < tr.n_mode_states and (s // len(tm.symbols)) % 2 == 0 else -1
            row = np.zeros(N)
            for k, a in enumerate(cyc):
                row[(head + k) % N] = a
            row[head % N] += 0.5  # mark the head
            frames.append(row)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    q0, q1 = W - 1, W - 1 + 60
    axes[0].imshow(0.2 * visible[q0:q1, :q1] + 0.8 * att[q0:q1, :q1], aspect="auto", cmap="Greys",
                   interpolation="nearest", extent=(-0.5, q1 - 0.5, q1 - 0.5, q0 - 0.5))
    axes[0].set_xlabel("key position j")
    axes[0].set_ylabel("query position i")
    axes[0].set_title(f"BB4, W={W}: hardmax weights (black) in the window (grey)")
    axes[1].imshow(np.array(frames), aspect="auto", cmap="Blues", interpolation="nearest")
    axes[1].set_xlabel(f"tape cell (mod W+1 = {N})")
    axes[1].set_ylabel("completed TM step")
    axes[1].set_title("Decoded tape per TM step (head = half tone)")
    rec.add_figure(save_figure(fig, out_dir / "attention_bb4.png").resolve(),
                   "Left: attention weights of the torch module (MachineTransformer.attention) on the first 60 "
                   "generated BB4 tokens: every query picks the oldest token of its window (lemma B). Right: the tape "
                   "decoded from the last W tokens plus the register after each completed TM step.", command=command)


def _precision(rec: RunRecord, out_dir: Path, profile: Profile, command: str) -> None:
    rows = precision_sweep(list(profile.precision_windows), FORMATS)
    lo, hi = profile.precision_windows[0], profile.precision_windows[-1]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for f, style in zip(FORMATS, ("s-", "o-", "x--"), strict=True):
        r = [x for x in rows if x["format"] == f.name]
        ax.plot([x["window"] for x in r], [x["mismatches"] / x["pairs"] for x in r], style, label=f.name,
                markersize=9 if style[0] == "o" else 6)
    ax.set_xscale("log")
    ax.set_xlabel("window W")
    ax.set_ylabel("fraction of (token, front) pairs wrong")
    ax.set_title("Closed certificate in p-bit arithmetic (round after every op), bcount")
    ax.legend()
    rec.add_figure(save_figure(fig, out_dir / "precision.png").resolve(),
                   f"The exhaustive rounded certificate (every (token, front symbol) pair, lemma B over every window "
                   f"of every length) of bcount compiled at W={lo:,} ... {hi:,}: p=3 bits (e2m0) is complete at every "
                   "W while the model's size in bits stays constant; p=2 cannot even represent 1.", command=command)
    by_w: dict[int, list] = {}
    for x in rows:
        by_w.setdefault(x["window"], [x["window"], x["pairs"]]).append(
            "complete" if x["complete"] else f"{x['mismatches']} wrong" + ("" if x["lemma_b"] else ", lemma B fails"))
    rec.add_table("Closed certificate with every operation rounded (bcount at W; exhaustive, not sampled)",
                  ["W", "pairs"] + [f.name for f in FORMATS], list(by_w.values()), command=command)
    params = rows[0]["model_bits_at_p"] // FORMATS[0].bits
    rec.add_table("Model size in bits at each precision (independent of W)", ["format", "params", "model bits"],
                  [[f.name, params, params * f.bits] for f in FORMATS], command=command)
    exact = {f.name: all(x["complete"] for x in rows if x["format"] == f.name) for f in FORMATS}
    rec.metrics["precision_exact_all_windows"] = exact
    rec.metrics["min_exact_bits"] = min(f.bits for f in FORMATS if exact[f.name])


def _softmax(rec: RunRecord, out_dir: Path, profile: Profile, command: str) -> None:
    rows = softmax_sweep(list(profile.softmax_windows))
    W = np.array([r["window"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(W, [r["min_beta"] for r in rows], "o", label="measured minimal β")
    ax.plot(W, np.log(W - 1), "-", label="ln(W-1)")
    ax.set_xscale("log")
    ax.set_xlabel("window W")
    ax.set_ylabel("inverse temperature β")
    ax.set_title("Softmax instead of hardmax: β must grow like log W")
    ax.legend()
    rec.add_figure(save_figure(fig, out_dir / "softmax_beta.png").resolve(),
                   "The smallest softmax inverse temperature keeping bcount exact (bisection to 0.01 over the run's "
                   "windows) follows ln(W-1): the oldest token's weight e^β/(e^β + W - 1) must beat the rest, so a "
                   "softmax model needs about log W bits; hardmax is what keeps the bit size constant.",
                   command=command)
    rec.add_table("Softmax ablation", ["W", "minimal β", "ln(W-1)"],
                  [[r["window"], r["min_beta"], r["ln_w_minus_1"]] for r in rows], command=command)
    slope = np.polyfit(np.log(W - 1), [r["min_beta"] for r in rows], 1)[0]
    rec.metrics["softmax_beta_slope_vs_ln_w"] = round(float(slope), 4)


def _throughput(rec: RunRecord, command: str) -> None:
    """One run per executor, in both units: a token is one Post machine step, a TM step costs many tokens."""
    tm = library_machine("bcount")
    rows = []
    for executor, k in (("reference", 14), ("table", 14), ("kv", 14), ("dense", 8)):
        r = run_machine(tm, "#" + "0" * k, executor=executor, check_every=1 << 30)
        steps_per_s = r.tm_steps / max(r.seconds, 1e-9)
        rows.append([executor, f"bcount k={k}", r.window, r.tm_steps, r.tokens, round(r.tokens / r.tm_steps, 2),
                     round(steps_per_s), round(r.tokens_per_s) if r.tokens_per_s is not None else "-", r.mismatches,
                     round(r.seconds, 3)])
        rec.metrics[f"{executor}_tm_steps_per_s"] = round(steps_per_s)
    rec.add_table("Throughput (one run per executor; the reference generates no tokens; see "
                  "benchmarks/machines.py for interleaved medians)",
                  ["executor", "run", "W", "TM steps", "tokens", "tokens per TM step", "TM steps/s", "tokens/s",
                   "mismatches", "s"], rows, command=command)
