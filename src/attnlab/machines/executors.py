"""Executors that generate tokens with the compiled network and agree token for token (registered by name
in :data:`attnlab.machines.registry.EXECUTORS`).

- ``dense``: real attention over the whole window with the compiled matrices (K/V cached per token,
  scores, hardmax and the weighted sum over all W keys, FFN as matrix products); batched over inputs.
- ``kv``: a ring buffer of token ids. Keys carry no content (W_K = 0), so the RPE alone decides the
  hardmax: the oldest slot. Each token reads that one cached value and evaluates the FFN sparsely from
  the same weights: O(1) work per token, independent of W.
- ``table``: next = T[current token][front token], where T is *derived by evaluating the network* on
  every (state, front symbol) pair (:func:`~.certificate.certify`, the closed certificate; numpy, no torch),
  and refused unless that certificate is complete (lemma B at every W, the FFN on every pair).

Every executor runs a ring of W token ids (the PM queue) and ``advance`` stops at a marked token
(``marks``: 1 counts, 2 halts), so a harness can stop at completed TM steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import AttnlabError
from .certificate import Certificate, certify
from .compile import CompiledTransformer
from .registry import executor_class


class Executor:
    """Common state: the ring of the last W tokens (the queue), the current token and counters."""

    name = ""

    def __init__(self, model: CompiledTransformer, prompt: Sequence[int], marks: Sequence[int]):
        if len(prompt) != model.window:
            raise AttnlabError(f"prompt of {len(prompt)} tokens for a window of {model.window}")
        self.model = model
        self.ring = list(prompt)
        self.pos = 0  # slot of the oldest token
        self.cur = self.ring[-1]
        self.marks = bytes(marks)
        self.tokens = 0
        self.halted = self.marks[self.cur] == 2

    def window(self) -> list[int]:
        """The last W tokens, oldest first."""
        return self.ring[self.pos:] + self.ring[:self.pos]

    def advance(self, count: int, max_tokens: int) -> int:
        """Generate tokens until ``count`` marked tokens, a halting token, or ``max_tokens`` tokens;
        returns the number of marked tokens generated."""
        raise NotImplementedError


class TableExecutor(Executor):
    name = "table"

    def __init__(self, model: CompiledTransformer, prompt: Sequence[int], marks: Sequence[int],
                 certificate: Certificate | None = None):
        super().__init__(model, prompt, marks)
        cert = certificate or certify(model)
        if not cert.complete:
            raise AttnlabError(f"table executor refused: the network's certificate is not complete "
                               f"({'; '.join(cert.failures())}); run it with --executor kv or dense")
        n_sym = model.n_symbols
        # one row per state, shared by that state's tokens, indexed by the front *token*
        rows = [[int(cert.table[s * n_sym, f % n_sym]) for f in range(model.vocab_size)]
                for s in range(len(model.pm.states))]
        self.next = [rows[t // n_sym] for t in range(model.vocab_size)]

    def advance(self, count: int, max_tokens: int) -> int:
        nxt, ring, marks, w = self.next, self.ring, self.marks, self.model.window
        p, cur, n, seen = self.pos, self.cur, 0, 0
        if not self.halted:
            # n, the tokens generated, is read after the loop; a for loop is ~1.5x faster than counting by hand
            for n in range(1, max_tokens + 1):  # noqa: B007
                cur = nxt[cur][ring[p]]
                ring[p] = cur
                p += 1
                if p == w:
                    p = 0
                if marks[cur]:
                    seen += 1
                    if marks[cur] == 2 or seen == count:
                        break
        self.pos, self.cur, self.tokens, self.halted = p, cur, self.tokens + n, marks[cur] == 2
        return seen


class KVExecutor(Executor):
    name = "kv"

    def __init__(self, model: CompiledTransformer, prompt: Sequence[int], marks: Sequence[int]):
        super().__init__(model, prompt, marks)
        # float64 products of these small integers are exact (and BLAS-fast, unlike numpy's integer matmul)
        wt = {k: v.astype(np.float64) for k, v in model.weights.items()}
        # reading only the oldest slot is lemma B: keys without content, a positive query, and an RPE
        # whose 'oldest' value beats the others; checked on the weights, not assumed
        rpe = wt["rpe"]
        if np.any(wt["w_k"]) or np.any(wt["embed"] @ wt["w_q"] <= 0) or rpe[2] <= max(rpe[0], rpe[1]):
            raise AttnlabError("kv executor: attention is not the RPE-only hardmax of the compiled form")
        # the cached per-token pieces of the FFN input: x W1 = E[cur] W1 + (E[front] W_V W_O) W1
        cur_pre = (wt["embed"] @ wt["w1"] + wt["b1"]).astype(np.int64)
        front_pre = (wt["embed"] @ wt["w_v"] @ wt["w_o"] @ wt["w1"]).astype(np.int64)
        # the sparse loop below is exact when front parts are 0/1 (a unit whose current part is below 0
        # cannot fire) and each unit's logits (W2 U, the factored output layer) are non-negative with a unique
        # maximum, so one firing unit at any positive activation picks that token; that one unit fires is
        # lemma C (certified)
        unit_logits = wt["w2"] @ wt["unembed"]
        top = np.sort(unit_logits, axis=1)
        if (front_pre.min() < 0 or front_pre.max() > 1 or unit_logits.min() < 0
                or (len(top) and np.any(top[:, -1] <= top[:, -2]))):
            raise AttnlabError("kv executor: weights outside the compiled form (units are not AND gates with a "
                               "unique output token)")
        self.cur_units = [[(int(u), int(cur_pre[t, u])) for u in np.flatnonzero(cur_pre[t] > -1)]
                          for t in range(model.vocab_size)]
        self.front_pre = [row.tolist() for row in front_pre]
        self.unit_token = unit_logits.argmax(1).tolist()  # the token each unit raises above all others

    def advance(self, count: int, max_tokens: int) -> int:
        cur_units, front_pre, out = self.cur_units, self.front_pre, self.unit_token
        ring, marks, w = self.ring, self.marks, self.model.window
        p, cur, n, seen = self.pos, self.cur, 0, 0
        if not self.halted:
            for n in range(1, max_tokens + 1):  # noqa: B007 (n is read after the loop)
                fp = front_pre[ring[p]]  # hardmax -> the oldest slot (RPE); its cached value
                nxt = -1
                for u, a in cur_units[cur]:
                    if a + fp[u] > 0:  # ReLU(x W1 + b1) of an AND unit: exactly one fires (lemma C)
                        nxt = out[u]
                        break
                if nxt < 0:
                    raise AttnlabError(f"kv executor: no FFN unit fired after token {cur} (not a compiled network)")
                cur = ring[p] = nxt
                p += 1
                if p == w:
                    p = 0
                if marks[cur]:
                    seen += 1
                    if marks[cur] == 2 or seen == count:
                        break
        self.pos, self.cur, self.tokens, self.halted = p, cur, self.tokens + n, marks[cur] == 2
        return seen


class DenseExecutor(Executor):
    """Full-window attention with the compiled matrices, float32 (exact on these small integers).

    The K/V cache is a doubled ring (each token written at slots p and p + W) so the window is one
    contiguous view, oldest first: scores, hardmax and the weighted sum run over all W keys every token.
    Batched: ``prompt`` may be a (B, W) array; rows that halt are frozen. The single-run interface
    (``advance``, ``window``) uses row 0."""

    name = "dense"

    def __init__(self, model: CompiledTransformer, prompt: Sequence[int] | np.ndarray, marks: Sequence[int]):
        prompts = np.atleast_2d(np.asarray(prompt, dtype=np.int64))
        super().__init__(model, prompts[0].tolist(), marks)
        w = {k: v.astype(np.float32) for k, v in model.weights.items()}
        self.w = w
        self.marks_arr = np.frombuffer(self.marks, dtype=np.uint8)
        # per-token projections (a cache of x W_Q, x W_K, x W_V for each token id)
        self.q_of = (w["embed"] @ w["w_q"])[:, 0]
        self.k_of = (w["embed"] @ w["w_k"])[:, 0]
        self.v_of = w["embed"] @ w["w_v"]
        W = model.window
        self.toks = np.concatenate([prompts, prompts], axis=1)  # (B, 2W) doubled ring of token ids
        self.k_cache = self.k_of[self.toks]  # (B, 2W)
        self.v_cache = self.v_of[self.toks]  # (B, 2W, |Λ|)
        self.rpe = model.rpe_by_offset(np.arange(W - 1, -1, -1)).astype(np.float32)  # oldest .. current
        self.cur_b = prompts[:, -1].copy()
        self.live = self.marks_arr[self.cur_b] != 2
        self.tokens_b = np.zeros(len(prompts), np.int64)
        self.stop_pos = np.zeros(len(prompts), np.int64)  # ring position where each row halted

    def step(self) -> np.ndarray:
        """One token for every live row; returns the new tokens (B,)."""
        w, W, p = self.w, self.model.window, self.pos
        k = self.k_cache[:, p:p + W]  # the window, oldest first
        scores = self.q_of[self.cur_b][:, None] * (k + self.rpe)  # (B, W)
        att = (np.arange(W) == scores.argmax(1)[:, None]).astype(np.float32)  # hardmax, ties -> oldest
        head = np.matmul(att[:, None, :], self.v_cache[:, p:p + W])[:, 0]  # Σ_j a_j v_j over all W
        x = w["embed"][self.cur_b] + head @ w["w_o"]
        logits = (np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"]) @ w["unembed"]
        nxt = np.where(self.live, logits.argmax(1), self.cur_b)
        val = np.where(self.live, nxt, self.toks[:, p])  # a halted row rewrites its own oldest token
        self.toks[:, p] = self.toks[:, p + W] = val  # the new token replaces the oldest, in both copies
        self.k_cache[:, p] = self.k_cache[:, p + W] = self.k_of[val]
        self.v_cache[:, p] = self.v_cache[:, p + W] = self.v_of[val]
        self.tokens_b += self.live
        self.cur_b = nxt
        self.pos = (p + 1) % W
        stopped = self.live & (self.marks_arr[nxt] == 2)
        self.stop_pos[stopped] = self.pos
        self.live = self.live & ~stopped
        return nxt

    def run_batch(self, max_tokens: int) -> np.ndarray:
        """Step until every row halts or ``max_tokens`` steps; returns tokens generated per row."""
        for _ in range(max_tokens):
            if not self.live.any():
                break
            self.step()
        return self.tokens_b

    def window_batch(self) -> np.ndarray:
        """(B, W) last tokens of each row, oldest first (a halted row's window as it halted)."""
        W = self.model.window
        pos = np.where(self.live, self.pos, self.stop_pos)
        return self.toks[np.arange(len(pos))[:, None], pos[:, None] + np.arange(W)]

    def window(self) -> list[int]:
        return self.window_batch()[0].tolist()

    def advance(self, count: int, max_tokens: int) -> int:
        seen, n = 0, 0
        while n < max_tokens and self.live[0]:
            cur = int(self.step()[0])
            n += 1
            if self.marks[cur]:
                seen += 1
                if self.marks[cur] == 2 or seen == count:
                    break
        self.cur, self.tokens, self.halted = int(self.cur_b[0]), int(self.tokens_b[0]), not bool(self.live[0])
        return seen


def make_executor(name: str, model: CompiledTransformer, prompt: Sequence[int], marks: Sequence[int],
                  certificate: Certificate | None = None) -> Executor:
    """The executor registered as ``name``; a ``certificate`` already computed spares the table executor
    from evaluating the network again."""
    cls = executor_class(name)
    if issubclass(cls, TableExecutor):
        return cls(model, prompt, marks, certificate)
    return cls(model, prompt, marks)


def table_batch(model: CompiledTransformer, certificate: Certificate, prompts: np.ndarray, marks: Sequence[int],
                max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table executor over B independent runs in numpy (one gather per token for all rows).
    Returns (tokens generated per row, final windows oldest first (B, W), final tokens)."""
    prompts = np.asarray(prompts, dtype=np.int64)
    B, W = prompts.shape
    n_sym = model.n_symbols
    table = certificate.table[np.arange(model.vocab_size)[:, None] // n_sym * n_sym, np.arange(n_sym)]
    stop = np.frombuffer(bytes(marks), dtype=np.uint8) == 2
    ring, cur = prompts.copy(), prompts[:, -1].copy()
    live, tokens, stop_pos = ~stop[cur], np.zeros(B, np.int64), np.zeros(B, np.int64)
    rows = np.arange(B)
    for i in range(max_tokens):
        if not live.any():
            break
        p = i % W
        nxt = np.where(live, table[cur, ring[:, p] % n_sym], cur)
        ring[:, p] = np.where(live, nxt, ring[:, p])
        tokens += live
        halted = live & stop[nxt]
        stop_pos[halted] = (p + 1) % W
        live &= ~halted
        cur = nxt
    pos = np.where(live, (min(max_tokens, int(tokens.max(initial=0))) % W), stop_pos)
    return tokens, ring[rows[:, None], (pos[:, None] + np.arange(W)) % W], cur
