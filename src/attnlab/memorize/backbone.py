"""The frozen backbone: a small pre-norm causal transformer read top to bottom (nanoGPT style).

Only the soft prompt is tuned (Wang & Lin 2025, the prompt-tuning setting). Token embeddings, positions,
blocks and the label readout are fixed at construction. Three facts make it cheap to tune a prompt:

- The model is causal, so the prompt's keys and values do not depend on the inputs: they are computed
  once per step at batch size 1 and shared by every example (:meth:`Backbone.prompt_cache`); the last block's
  attention over the prompt itself is never needed.
- Nothing before the first attention depends on the prompt: the inputs' embeddings, first-block projections and
  first-block attention among themselves are computed once per fit (:meth:`Backbone.input_states`); each step adds
  only the inputs' scores on the prompts, one product for all prompts and examples, merged in by the log-sum-exp
  rule of flash attention (:func:`attend_after_prefix`). When only the last position is read (labels at the
  last position), the last block attends and carries on for that position alone.
- Autoregressive generation steps (the trade-off of the main theorem) feed the last hidden state back as
  the next input and reuse a KV cache, so step t costs O(m + seq_len + t), not a full recomputation.

The weights do not depend on ``max_len`` (``draw="invariant"``): a run at another seq_len or number of generation
steps T gets the same blocks, embeddings and readout, and position rows that agree on the positions both have, so
the T and seq_len experiments compare one backbone. ``draw="legacy"`` is the draw of sweeps logged before.

Init scale is a first-class setting (the abstract: the backbone's initialisation matters; at gain 1 attention
is near uniform and the prompt can only add a fixed bias, Petrov et al. 2024; sharper attention lets prompt
tuning memorize). The schemes are named in :data:`attnlab.memorize.settings.INITS`.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import AttnlabError, require
from .settings import DRAWS, INITS, READOUTS

KV = tuple[torch.Tensor, torch.Tensor]  # (keys, values), each (batch, heads, length, head_dim)


@dataclass
class BackboneConfig:
    vocab: int = 64
    n_classes: int = 8
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 1
    d_ff: int = 256
    max_len: int = 64        # input positions plus generation steps
    norm: bool = True        # pre-norm LayerNorm in each block and before the readout
    init: str = "gaussian"   # one of INITS
    gain: float = 3.0        # weights ~ N(0, gain^2 / fan_in); scales orthogonal init too
    train_steps: int = 300   # init="trained": steps of next-token training on a synthetic task
    seed: int = 0
    draw: str = "invariant"  # one of DRAWS: whether the weights depend on max_len ("legacy") or not
    readout: str = "vocab"   # one of READOUTS: logits over the whole vocabulary or over the n_classes labels

    def __post_init__(self) -> None:
        require(self.init in INITS, f"unknown init {self.init!r} (use one of {', '.join(INITS)})")
        require(self.draw in DRAWS, f"unknown backbone draw {self.draw!r} (use one of {', '.join(DRAWS)})")
        require(self.readout in READOUTS, f"unknown readout {self.readout!r} (use one of {', '.join(READOUTS)})")
        require(self.readout == "classes" or self.n_classes <= self.vocab,
                f"readout 'vocab' reads labels as token ids: n_classes={self.n_classes} must be at most "
                f"vocab={self.vocab} (raise --vocab, or use --readout classes)")
        require(self.d_model % self.n_heads == 0,
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        for name in ("vocab", "n_classes", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            require(getattr(self, name) >= 1, f"{name} must be positive, got {getattr(self, name)}")
        require(math.isfinite(self.gain) and self.gain > 0, f"gain must be a finite number > 0, got {self.gain}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_logits(self) -> int:
        """How many logits the readout gives: the vocabulary, or the n_classes labels (see READOUTS)."""
        return self.vocab if self.readout == "vocab" else self.n_classes


@functools.lru_cache(maxsize=64)
def causal_mask(T: int, P: int, device: torch.device) -> torch.Tensor:
    """(T, P + T) boolean mask: query i (absolute position P + i) sees keys 0..P+i. Cached: built once per shape."""
    return torch.ones(T, P + T, dtype=torch.bool, device=device).tril(diagonal=P)


def _prepend(prefix: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``prefix`` (P, H, m, hd) before each row of ``t`` (B, H, T, hd), prefix p before the p-th of P equal groups
    of rows: one copy (the cat), however many rows share a prefix."""
    P, B = prefix.shape[0], t.shape[0]
    grouped = t.unflatten(0, (P, B // P))
    return torch.cat([prefix[:, None].expand(-1, B // P, -1, -1, -1), grouped], dim=3).flatten(0, 1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values (B, heads, T, head_dim) of the projections ``qkv`` (B, T, 3d)."""
        B, T, d = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        return tuple(t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in qkv.split(d, dim=2))

    def forward(self, qkv: torch.Tensor, past: KV | None, last_only: bool = False) -> tuple[torch.Tensor, KV]:
        """Attend with the projections ``qkv`` (B, T, 3d) to ``past`` keys/values plus its own, causally; returns
        the output (B, T, d), or (B, 1, d) for the last query alone with ``last_only``, and the full (past + new)
        keys/values."""
        B, T, d = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = self.heads(qkv)
        if past is not None:  # P cached prefixes (P divides B), prefix p shared by rows p*B/P .. (p+1)*B/P - 1
            k, v = (_prepend(c, t) for c, t in zip(past, (k, v), strict=True))
        if last_only:  # the last query sees every key: no mask, and no attention for the other queries
            y = F.scaled_dot_product_attention(q[:, :, -1:], k, v).transpose(1, 2).reshape(B, 1, d)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, k.shape[2] - T, qkv.device))
            y = y.transpose(1, 2).reshape(B, T, d)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model) if cfg.norm else nn.Identity()
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model) if cfg.norm else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff, bias=False), nn.GELU(),
                                 nn.Linear(cfg.d_ff, cfg.d_model, bias=False))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Query/key/value projections of the normalised input (B, T, 3d)."""
        return self.attn.qkv(self.ln_1(x))

    def forward(self, x: torch.Tensor, past: KV | None, last_only: bool = False) -> tuple[torch.Tensor, KV]:
        """``last_only``: carry only the last position on (its keys/values still cover every position)."""
        a, kv = self.attn(self.project(x), past, last_only)
        return self._mlp((x[:, -1:].contiguous() if last_only else x) + a), kv

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.ln_2(x))

    def after_prompts(self, inputs: InputStates, prompts: KV, last_only: bool = False) -> torch.Tensor:
        """This block (the first) over the inputs after each of P prompts, given the prompts' keys/values (P, heads,
        m, head_dim): (P * B, L, d), sequence p * B + b being example b after prompt p, or the last position alone
        (P * B, 1, d). Only the queries' scores on the prompts are computed per prompt; the inputs' attention among
        themselves is the one of ``inputs``, merged in (:func:`attend_after_prefix`)."""
        rows = slice(-1, None) if last_only else slice(None)
        y = attend_after_prefix(inputs.q[:, :, rows], prompts, inputs.own.rows(rows))  # (P, B, H, L', hd)
        a = self.attn.proj(y.transpose(2, 3).flatten(3).flatten(0, 1))
        return self._mlp(inputs.x[:, rows].repeat(y.shape[0], 1, 1) + a)


class OwnAttention(NamedTuple):
    """Causal attention of the inputs among themselves, kept unnormalised so keys before them can be merged in
    (the running max / normaliser / weighted values of flash attention): per query (B, heads, L) the largest
    score and the sum of exp(score - largest), and (B, heads, L, head_dim) the exp-weighted sum of the values."""

    top: torch.Tensor
    norm: torch.Tensor
    values: torch.Tensor

    @classmethod
    def of(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> OwnAttention:
        L = q.shape[2]
        scores = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~causal_mask(L, 0, q.device), -math.inf)
        top = scores.amax(-1)  # finite: a query always sees itself
        weights = (scores - top[..., None]).exp()
        return cls(top, weights.sum(-1), weights @ v)

    def rows(self, rows: slice) -> OwnAttention:
        return OwnAttention(self.top[:, :, rows], self.norm[:, :, rows], self.values[:, :, rows])


def attend_after_prefix(q: torch.Tensor, prefix: KV, own: OwnAttention) -> torch.Tensor:
    """Softmax attention of queries ``q`` (B, H, L, hd) over P prefixes' keys/values (P, H, m, hd), each seen by
    every query, followed by the queries' own causal keys (summarised in ``own``): (P, B, H, L, hd). The same
    function as attention over the concatenated keys; the prefix scores are one product for all P * B sequences
    (no copy of a prefix per example), the own part is computed once."""
    k, v = prefix
    scores = torch.einsum("bhld,phmd->pbhlm", q, k) * q.shape[-1] ** -0.5
    top = torch.maximum(own.top, scores.detach().amax(-1))  # a shift that cancels: no gradient through it
    weights, own_scale = (scores - top[..., None]).exp(), (own.top - top).exp()
    norm = own.norm * own_scale + weights.sum(-1)
    return (own.values * own_scale[..., None] + torch.einsum("pbhlm,phmd->pbhld", weights, v)) / norm[..., None]


@dataclass(frozen=True)
class InputStates:
    """What the frozen model computes from the inputs before attention mixes in the prompt: the embedded
    tokens (B, L, d), the first block's projections (B, L, 3d) and its queries (B, heads, L, head_dim), and the
    inputs' first-block attention among themselves. Computed once per fit, reused every step."""

    x: torch.Tensor
    qkv: torch.Tensor
    q: torch.Tensor
    own: OwnAttention


class Backbone(nn.Module):
    """Frozen causal transformer over [soft prompt; input tokens; generated steps] with a label readout."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model)  # input and generated positions; the prompt has none
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.norm else nn.Identity()
        self.readout = nn.Linear(cfg.d_model, cfg.n_logits, bias=False)
        init_weights(self, cfg)
        if cfg.init == "trained":
            pretrain(self, cfg)
        self.requires_grad_(False)
        self.eval()

    @property
    def d_model(self) -> int:
        return self.cfg.d_model

    def _run(self, x: torch.Tensor, past: list[KV] | None, last_only: bool = False,
             first: int = 0) -> tuple[torch.Tensor, list[KV]]:
        """Blocks ``first``, ... over ``x`` given their ``past`` keys/values (``last_only``: the last block carries
        only the last position); returns ln_f(hidden) and their caches."""
        caches = []
        for i, block in enumerate(self.blocks[first:], first):
            x, kv = block(x, None if past is None else past[i - first], last_only and i == len(self.blocks) - 1)
            caches.append(kv)
        return self.ln_f(x), caches

    def prompt_cache(self, prompt: torch.Tensor) -> list[KV]:
        """Keys/values of the soft prompt (m, d), computed once at batch size 1 (exact: causal model), or of S
        prompts (S, m, d) at batch size S."""
        x, caches = prompt if prompt.dim() == 3 else prompt.unsqueeze(0), []
        for block in self.blocks[:-1]:
            x, kv = block(x, None)
            caches.append(kv)
        last = self.blocks[-1]  # its keys and values are all the last block gives the inputs: no attention there
        _, k, v = last.attn.heads(last.project(x))
        return [*caches, (k, v)]

    def _embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        end = start + tokens.shape[1]
        require(end <= self.cfg.max_len, f"sequence of {end} positions exceeds max_len={self.cfg.max_len}")
        return self.wte(tokens) + self.wpe.weight[start:end]

    @torch.no_grad()
    def input_states(self, tokens: torch.Tensor) -> InputStates:
        """The prompt-independent part of the forward pass for ``tokens`` (B, L) (see :class:`InputStates`)."""
        x = self._embed(tokens)
        qkv = self.blocks[0].project(x)
        q, k, v = self.blocks[0].attn.heads(qkv)
        return InputStates(x, qkv, q, OwnAttention.of(q, k, v))

    def forward(self, prompt: torch.Tensor, tokens: torch.Tensor | InputStates, gen_steps: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, seq_len, n_logits: the vocabulary or the n_classes labels) after the prompt (m, d); with
        ``gen_steps`` = T > 0 the last position's logits are replaced by those read after T continuous generation
        steps. ``tokens`` may be precomputed :meth:`input_states`. ``last_only``: only the last position's logits
        (B, 1, n_logits), skipping what only the other positions' outputs need (the last block's attention there,
        output projection, MLP, final norm and readout); the same logits and prompt gradient as without it, up to
        rounding.

        S prompts (S, m, d) run as one batch of S * B sequences (every example once per prompt): logits
        (S, B, seq_len, n_logits), prompt s's in row s, each prompt's only through its own sequences."""
        inputs = tokens if isinstance(tokens, InputStates) else self.input_states(tokens)
        cache = self.prompt_cache(prompt)
        x = self.blocks[0].after_prompts(inputs, cache[0], last_only and len(self.blocks) == 1)
        hidden, later = self._run(x, cache[1:], last_only, first=1)
        if gen_steps:  # the first block's keys/values in full: each prompt's, then the inputs'
            first = tuple(_prepend(c, t.repeat(c.shape[0], 1, 1, 1))
                          for c, t in zip(cache[0], self.blocks[0].attn.heads(inputs.qkv)[1:], strict=True))
            last = self.generate(hidden[:, -1:], [first, *later], inputs.x.shape[1], gen_steps)
            hidden = last if last_only else torch.cat([hidden[:, :-1], last], 1)
        logits = self.readout(hidden)
        return logits.unflatten(0, (prompt.shape[0], -1)) if prompt.dim() == 3 else logits

    def generate(self, last: torch.Tensor, cache: list[KV], start: int, gen_steps: int) -> torch.Tensor:
        """Feed the last hidden state back as the next input ``gen_steps`` times (KV cache); returns the final
        hidden state (B, 1, d). This is the "autoregressive generation steps" of the trade-off theorem."""
        require(start + gen_steps <= self.cfg.max_len,
                f"{start} positions plus {gen_steps} generation steps exceed max_len={self.cfg.max_len}")
        for t in range(gen_steps):
            last, cache = self._run(last + self.wpe.weight[start + t:start + t + 1], cache)
        return last

    def forward_naive(self, prompt: torch.Tensor, tokens: torch.Tensor, gen_steps: int = 0) -> torch.Tensor:
        """Reference: concatenate the prompt to every example and recompute everything at each step."""
        B, L = tokens.shape
        x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), self._embed(tokens)], dim=1)
        for t in range(gen_steps):
            h, _ = self._run(x, None)
            x = torch.cat([x, h[:, -1:] + self.wpe.weight[L + t:L + t + 1]], dim=1)
        h, _ = self._run(x, None)
        logits = self.readout(h[:, prompt.shape[0]:prompt.shape[0] + L])
        if gen_steps:
            logits = torch.cat([logits[:, :-1], self.readout(h[:, -1:])], dim=1)
        return logits

    @torch.no_grad()
    def greedy_decode(self, prompt: torch.Tensor, keys: torch.Tensor, n_new: int) -> torch.Tensor:
        """Greedy decoding for sequence memorization: from the first token(s) ``keys`` (B, k), emit the argmax
        label and feed it back as the next input token, one position at a time with a KV cache."""
        require(self.cfg.n_classes <= self.cfg.vocab, "greedy decoding feeds labels back: needs n_classes <= vocab")
        cache = self.prompt_cache(prompt)  # one prompt's keys/values: attention prepends them to every row
        out, x, start = [], keys, 0
        for _ in range(n_new):
            h, cache = self._run(self._embed(x, start), cache)
            start += x.shape[1]
            x = self.readout(h[:, -1:]).argmax(-1)
            out.append(x)
        return torch.cat(out, dim=1)


#: Position rows are drawn this many at a time, so the first n rows are the same for every table size.
POSITION_CHUNK = 16
#: init="trained" pretrains at this many positions whatever max_len is (draw="invariant").
PRETRAIN_LEN = 16


def stream(seed: int, part: str) -> torch.Generator:
    """A generator of its own for one ``part`` of the backbone, derived from the backbone seed and the part's name
    (independent of the main generator and of every other seed's streams)."""
    digest = hashlib.sha256(f"attnlab.memorize.{part}:{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def position_rows(seed: int, n: int, d: int) -> torch.Tensor:
    """The first ``n`` rows (n, d) of the position table of draw="invariant": N(0, 1) from the "positions" stream,
    drawn :data:`POSITION_CHUNK` rows at a time, so row i does not depend on ``n``."""
    g = stream(seed, "positions")
    chunks = [torch.randn(POSITION_CHUNK, d, generator=g) for _ in range(-(-n // POSITION_CHUNK))]
    return torch.cat(chunks)[:n]


def init_weights(model: Backbone, cfg: BackboneConfig) -> None:
    """Initialise in place, seeded by ``cfg.seed``. Embeddings and readout are N(0, 1) and N(0, 1/d) in
    every scheme (the readout's first n_classes rows from the main generator, as with readout="classes", and the
    other tokens' rows from a "readout" stream, so both readouts have the same blocks and label rows); the schemes
    (:data:`~attnlab.memorize.settings.INITS`) differ in the blocks' matrices:

    - gaussian: W ~ N(0, gain^2 / fan_in);
    - orthogonal: (semi-)orthogonal W times gain;
    - identity: value and output maps are the identity, query/key small (N(0, 0.1^2/fan_in)), MLP small,
      i.e. near-uniform attention that copies the average input;
    - trained: gaussian, then :func:`pretrain`.

    draw="invariant" takes the positions from :func:`position_rows`; "legacy" draws the table of max_len rows from
    the main generator right after the token embeddings (so everything after it depends on max_len).
    """
    g = torch.Generator().manual_seed(cfg.seed)
    d = cfg.d_model

    def gaussian(w: torch.Tensor, gain: float) -> None:
        w.copy_(torch.randn(w.shape, generator=g) * gain / math.sqrt(w.shape[1]))

    with torch.no_grad():
        model.wte.weight.copy_(torch.randn(model.wte.weight.shape, generator=g))
        if cfg.draw == "legacy":
            model.wpe.weight.copy_(torch.randn(model.wpe.weight.shape, generator=g))
        else:
            model.wpe.weight.copy_(position_rows(cfg.seed, cfg.max_len, d))
        rows = model.readout.weight
        gaussian(rows[:cfg.n_classes], 1.0)
        if rows.shape[0] > cfg.n_classes:
            rest = torch.randn(rows.shape[0] - cfg.n_classes, d, generator=stream(cfg.seed, "readout"))
            rows[cfg.n_classes:].copy_(rest / math.sqrt(d))
        for block in model.blocks:
            for lin in (block.attn.qkv, block.attn.proj, block.mlp[0], block.mlp[2]):
                if cfg.init == "orthogonal":
                    q, _ = torch.linalg.qr(torch.randn(max(lin.weight.shape), min(lin.weight.shape), generator=g))
                    lin.weight.copy_((q if lin.weight.shape[0] >= lin.weight.shape[1] else q.T) * cfg.gain)
                elif cfg.init == "identity":
                    gaussian(lin.weight, 0.1)
                else:
                    gaussian(lin.weight, cfg.gain)
            if cfg.init == "identity":
                block.attn.qkv.weight[2 * d:].copy_(torch.eye(d))
                block.attn.proj.weight.copy_(torch.eye(d))


def pretrain(model: Backbone, cfg: BackboneConfig, batch: int = 32, lr: float = 3e-3) -> None:
    """init="trained": briefly train the blocks (not embeddings or readout) on next-token prediction over a
    random first-order Markov chain, a stand-in for a pretrained backbone. Deterministic given cfg.seed.

    draw="invariant": sequences of :data:`PRETRAIN_LEN` tokens over the first rows of :func:`position_rows`, the
    chain and batches from the "pretrain" stream, so the trained blocks do not depend on max_len. "legacy":
    min(PRETRAIN_LEN, max_len) tokens over the model's own table, generator seeded with seed + 1."""
    require(cfg.train_steps >= 1, f"init='trained' needs train_steps >= 1, got {cfg.train_steps}")
    if cfg.draw == "legacy":
        g, L = torch.Generator().manual_seed(cfg.seed + 1), min(PRETRAIN_LEN, cfg.max_len)
        positions = model.wpe.weight[:L - 1]
    else:
        g, L = stream(cfg.seed, "pretrain"), PRETRAIN_LEN
        positions = position_rows(cfg.seed, L - 1, cfg.d_model)
    transition = torch.softmax(2.0 * torch.randn(cfg.vocab, cfg.vocab, generator=g), dim=1)
    lm_head = model.wte.weight  # tied, frozen: the blocks learn to land near the next token's embedding
    params = [p for b in model.blocks for p in b.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(cfg.train_steps):
        x = torch.empty(batch, L, dtype=torch.long)
        x[:, 0] = torch.randint(0, cfg.vocab, (batch,), generator=g)
        for t in range(1, L):
            x[:, t] = torch.multinomial(transition[x[:, t - 1]], 1, generator=g).squeeze(1)
        h, _ = model._run(model.wte(x[:, :-1]) + positions, None)
        loss = F.cross_entropy((h @ lm_head.T).reshape(-1, cfg.vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)


def check_prompt_length(m: int, max_len: int | None = None) -> None:
    """A prompt length must be a positive integer (and at most ``max_len`` when one is given)."""
    if not isinstance(m, int) or m < 1 or (max_len is not None and m > max_len):
        raise AttnlabError(f"prompt length m={m!r} out of range (1..{max_len if max_len else 'inf'})")
