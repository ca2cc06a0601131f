"""The attention/queue figure of one run (``attnlab machines run SPEC --figure FILE.png``).

For each generated token, which earlier token the hardmax picked is computed from the compiled weights (the
query, key and RPE scores of :mod:`.network`, first maximum as in :func:`~.network.hardmax`), not assumed from
lemma B; the figure then shows (left) the picked key against the window of every query, and (right) the queue
over time, front at the left, every slot coloured by its symbol, with the picked slot marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import AttnlabError
from .compile import CompiledTransformer, compile_pm
from .machine import PostMachine, TuringMachine
from .network import identity, projections, scores, weights64
from .post import tm_to_pm
from .simulate import token_marks

#: The figure draws at most this many generated tokens (and says so), so a small run stays readable.
FIGURE_TOKENS = 240


def attention_picks(model: CompiledTransformer, stream: Sequence[int]) -> np.ndarray:
    """For generated token i (stream index W + i), the stream index of the key the network's hardmax attends
    to: the argmax of score_j = q_cur (k_j + rpe(cur - j)) over the window that produced it (eq. of
    :func:`~.network.network_logits`)."""
    W, tokens = model.window, np.asarray(stream)
    if len(tokens) <= W:
        return np.zeros(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], W)  # (T - W, W), oldest first
    q_of, k_of, _ = projections(weights64(model), identity)
    bias = model.rpe_by_offset(np.arange(W - 1, -1, -1)).astype(np.float64)
    s = scores(q_of[windows[:, -1]], k_of[windows], bias, identity)
    return np.arange(len(windows)) + s.argmax(-1)


def machine_model(machine: TuringMachine | PostMachine, window: int) -> tuple[CompiledTransformer, list[int]]:
    """The compiled network and, per token id, its mark: 2 halting, 1 head read (a completed TM step), 0 else."""
    if isinstance(machine, PostMachine):
        model = compile_pm(machine, window)
        return model, [2 if t // model.n_symbols in machine.halting else 0 for t in range(model.vocab_size)]
    tr = tm_to_pm(machine)
    model = compile_pm(tr.pm, window)
    return model, token_marks(tr, model)


def queue_figure(machine: TuringMachine | PostMachine, stream: Sequence[int], window: int, path: str | Path,
                 title: str) -> dict[str, int]:
    """Draw the attention/queue figure of a run's token ``stream`` (W prompt tokens, then the generated ones)
    to ``path`` (PNG, atomic). Returns what was drawn: tokens shown, tokens in the run, queries whose pick is the
    oldest token of their window."""
    from ..core.plots import plt, save_figure

    model, marks = machine_model(machine, window)
    W, generated = window, len(stream) - window
    if generated < 1:
        raise AttnlabError("the run generated no token, so there is no attention to draw")
    shown = min(generated, FIGURE_TOKENS)
    picks = attention_picks(model, stream[:W + shown])
    oldest = int(np.sum(picks == np.arange(shown)))
    n_sym = model.n_symbols
    fig, (ax_att, ax_q) = plt.subplots(1, 2, figsize=(12, max(3.5, min(9.0, 2.0 + shown / 30))),
                                       gridspec_kw={"width_ratios": [3, 2]})
    rows = np.arange(shown)
    ax_att.barh(rows, np.full(shown, W), left=rows, height=1.0, color="0.88", label=f"window (W = {W})")
    ax_att.plot(picks, rows, "k.", markersize=4 if shown > 60 else 7, label="key the hardmax picked")
    steps = [i for i in range(shown) if marks[stream[W + i]] >= 1]
    ax_att.plot([W + i for i in steps], steps, ">", color="tab:red", markersize=3 if shown > 60 else 5,
                label="generated token is a head read" if isinstance(machine, TuringMachine) else "halting token")
    ax_att.set_xlim(-0.5, W + shown - 0.5)
    ax_att.set_ylim(shown - 0.5, -0.5)
    ax_att.set_xlabel("stream position (W prompt tokens, then generated)")
    ax_att.set_ylabel("generated token")
    ax_att.set_title(f"attention: {oldest}/{shown} queries pick the oldest token")
    ax_att.legend(loc="lower left", fontsize=7)
    symbols = np.array([[stream[i + j] % n_sym for j in range(W)] for i in range(shown)])
    cmap = plt.get_cmap("tab20", max(n_sym, 2))
    ax_q.imshow(symbols, aspect="auto", cmap=cmap, vmin=-0.5, vmax=max(n_sym, 2) - 0.5, interpolation="nearest")
    ax_q.plot(picks - rows, rows, "k.", markersize=3 if shown > 60 else 6)
    ax_q.set_xlabel("queue slot (front = oldest token, at 0)")
    ax_q.set_ylabel("generated token")
    ax_q.set_title("the queue over time (colour: pushed symbol, dot: picked)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c)) for c in range(n_sym)]
    ax_q.legend(handles, [model.pm.symbols[c] for c in range(n_sym)], fontsize=7, ncol=min(n_sym, 4),
                loc="upper right", title="symbol", title_fontsize=7)
    fig.suptitle(title + ("" if shown == generated else f" (first {shown} of {generated:,} tokens)"), y=1.02)
    save_figure(fig, path)
    return {"figure_tokens": shown, "run_tokens": generated, "oldest_picks": oldest}
