"""Sufficient statistics of X and A per layer, streamed in float64: never N x d activations (the official
code stores them all; the statistics are all that Prop. 3.1 and Thm 3.2 of the paper need).

Each batch is reduced to its count, means and centred second moments, merged into the running totals
with Chan's parallel update (exact, and stable when the residual stream has huge means).
Memory is O(L d^2); the statistics file is safetensors and records how many batches it has seen, so an
interrupted collection resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_path
from ..core.errors import AttnlabError
from ..core.hf import decoder_layers, first_tensor, layer_list

STATS_SCHEMA = "attnlab.nbl.stats/1"


@dataclass
class LayerStats:
    """Running float64 moments of (X, A) for one layer plus the cosine sums the baselines need
    (cosines are computed in float32, summed in float64)."""

    d: int
    n: int = 0
    mean_x: torch.Tensor = None
    mean_a: torch.Tensor = None
    m2_xx: torch.Tensor = None  # sum over tokens of (x - mean_x)(x - mean_x)^T
    m2_xa: torch.Tensor = None
    m2_aa: torch.Tensor = None
    cos_attention: float = 0.0  # sum over tokens of cos(x, x + a)
    cos_block: float = 0.0      # sum over tokens of cos(x, block output)
    n_block: int = 0

    def __post_init__(self):
        for name in ("mean_x", "mean_a"):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(self.d, dtype=torch.float64))
        for name in ("m2_xx", "m2_xa", "m2_aa"):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(self.d, self.d, dtype=torch.float64))

    def update(self, x: torch.Tensor, a: torch.Tensor) -> None:
        """Merge a batch of token rows x, a (N x d, any dtype/device) into the totals."""
        x, a = x.reshape(-1, self.d), a.reshape(-1, self.d)
        x32, a32 = x.float(), a.float()
        cos = torch.nn.functional.cosine_similarity(x32, x32 + a32, dim=-1)
        self.cos_attention += float(cos.sum(dtype=torch.float64))
        x, a = x.to(torch.float64), a.to(torch.float64)
        nb = x.shape[0]
        mx, ma = x.mean(0), a.mean(0)
        xc, ac = x - mx, a - ma
        dx, da = mx - self.mean_x.to(x.device), ma - self.mean_a.to(x.device)
        n = self.n + nb
        w = self.n * nb / n
        dev = self.m2_xx.device
        self.m2_xx += (xc.T @ xc + w * torch.outer(dx, dx)).to(dev)
        self.m2_xa += (xc.T @ ac + w * torch.outer(dx, da)).to(dev)
        self.m2_aa += (ac.T @ ac + w * torch.outer(da, da)).to(dev)
        self.mean_x += (dx * nb / n).to(dev)
        self.mean_a += (da * nb / n).to(dev)
        self.n = n

    def update_block(self, x: torch.Tensor, out: torch.Tensor) -> None:
        x, out = x.reshape(-1, self.d).float(), out.reshape(-1, self.d).float()
        self.cos_block += float(torch.nn.functional.cosine_similarity(x, out, dim=-1).sum(dtype=torch.float64))
        self.n_block += x.shape[0]

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(C_XX, C_XA, C_AA) with divisor N - 1, as float64 numpy arrays."""
        if self.n < 2:
            raise AttnlabError("statistics hold fewer than 2 tokens; collect more calibration text")
        return tuple((m / (self.n - 1)).cpu().numpy() for m in (self.m2_xx, self.m2_xa, self.m2_aa))

    @property
    def mean_cos_attention(self) -> float:
        return self.cos_attention / max(self.n, 1)

    @property
    def mean_cos_block(self) -> float:
        return self.cos_block / max(self.n_block, 1)


@dataclass
class Stats:
    """Statistics of every collected layer of one model, and what they were collected on."""

    fingerprint: str
    layers: dict[int, LayerStats]
    meta: dict = field(default_factory=dict)  # calibration description, seq_len, batches_done, ...
    entry: Entry | None = None  # with collect(capture=True): the stream entering the last layer (not saved)
    scores: dict[str, dict[int, float]] = field(default_factory=dict)  # selector -> per-layer score (not saved)

    @property
    def tokens(self) -> int:
        return max((s.n for s in self.layers.values()), default=0)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {}
        for i, s in self.layers.items():
            for name in ("mean_x", "mean_a", "m2_xx", "m2_xa", "m2_aa"):
                tensors[f"{i}.{name}"] = getattr(s, name).detach().cpu().contiguous()
            tensors[f"{i}.scalars"] = torch.tensor([s.n, s.cos_attention, s.cos_block, s.n_block], dtype=torch.float64)
        meta = {"schema": STATS_SCHEMA, "fingerprint": self.fingerprint, "meta": json.dumps(self.meta)}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=meta)
        return Path(path)

    @property
    def complete(self) -> bool:
        """Whether every calibration batch has been counted (False for an interrupted collection)."""
        return self.meta.get("batches_done", 0) >= self.meta.get("n_batches", 0)

    @staticmethod
    def peek(path: str | Path) -> dict | None:
        """The ``meta`` of a statistics file without reading its tensors; None when ``path`` is not one."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            return json.loads(header["meta"]) if header.get("schema") == STATS_SCHEMA else None
        except Exception:  # not a safetensors file, or a damaged one: not a statistics file either way
            return None

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None) -> Stats:
        """Load a statistics file; with ``fingerprint``, refuse one collected on another model."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise AttnlabError(f"statistics file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise AttnlabError(f"{path}: not a readable safetensors statistics file ({e})") from None
        if header.get("schema") != STATS_SCHEMA:
            raise AttnlabError(f"{path}: not an attnlab NBL statistics file")
        if fingerprint is not None and header["fingerprint"] != fingerprint:
            raise AttnlabError(f"{path}: statistics were collected on another model "
                               f"(fingerprint {header['fingerprint']}, this model {fingerprint}); collect them again")
        layers = {}
        for key in tensors:
            if key.endswith(".scalars"):
                i = int(key.split(".")[0])
                n, ca, cb, nb = tensors[key].tolist()
                layers[i] = LayerStats(d=tensors[f"{i}.mean_x"].numel(), n=int(n), cos_attention=ca, cos_block=cb,
                                       n_block=int(nb), **{name: tensors[f"{i}.{name}"] for name in
                                                           ("mean_x", "mean_a", "m2_xx", "m2_xa", "m2_aa")})
        return cls(header["fingerprint"], dict(sorted(layers.items())), json.loads(header.get("meta", "{}")))


def fingerprint(model) -> str:
    """Identifies a model by its config and a sample of its weights (first 4096 values of each tensor)."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().reshape(-1)[:4096].to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class _StopForward(Exception):
    """Raised by a hook once the last layer of interest has been seen: later layers need not run."""


class _Passthrough(torch.nn.Module):
    """Stands in for a layer whose output is replayed from an :class:`Entry` (the layer does no work)."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@dataclass
class Entry:
    """The residual stream entering layer ``layer``, one tensor per calibration batch.

    Sequential NBL keeps one (N x d float32 in memory) so that each re-collection starts at the previous
    replaced layer instead of at the embeddings: all passes together cost about one forward pass.
    """

    layer: int
    hidden: list[torch.Tensor]


def _hidden_arg(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def collect(model, blocks: torch.Tensor, batch_size: int = 8, layers: list[int] | None = None,
            stats: Stats | None = None, checkpoint: str | Path | None = None, checkpoint_every: int = 8,
            progress: bool = True, meta: dict | None = None, enter: Entry | None = None,
            capture: bool = False) -> Stats:
    """Stream ``blocks`` (n_blocks x seq_len token ids) through ``model`` and accumulate per-layer statistics.

    ``layers`` restricts collection (and the forward pass stops after the last of them). With ``stats`` given
    (e.g. loaded from ``checkpoint``), batches already counted in ``stats.meta["batches_done"]`` are skipped,
    so a collection resumes; the ``checkpoint`` file is rewritten atomically every ``checkpoint_every`` batches
    and at the end. ``enter`` replays the residual stream entering ``enter.layer`` instead of computing the
    layers before it; ``capture`` keeps the stream entering the last collected layer in ``stats.entry``.
    """
    from tqdm import tqdm

    all_layers = decoder_layers(model)
    wanted = sorted(set(layers)) if layers is not None else [layer.index for layer in all_layers]
    if not wanted or wanted[-1] >= len(all_layers) or wanted[0] < 0:
        raise AttnlabError(f"layers must be within 0..{len(all_layers) - 1}, got {layers}")
    if enter is not None and enter.layer > wanted[0]:
        raise AttnlabError(f"cannot collect layer {wanted[0]} when starting at layer {enter.layer}")
    d = model.config.hidden_size
    if stats is None:
        stats = Stats(fingerprint(model), {i: LayerStats(d) for i in wanted}, dict(meta or {}))
    stats.meta.setdefault("batches_done", 0)
    stats.scores.clear()  # scores of the statistics before this collection
    n_batches = (len(blocks) + batch_size - 1) // batch_size
    stats.meta.update({"batch_size": batch_size, "seq_len": int(blocks.shape[1]), "n_batches": n_batches})
    current_x: dict[int, torch.Tensor] = {}
    last = wanted[-1]
    captured: list[torch.Tensor] = []
    batch_index = [0]

    def x_hook(i):
        def hook(module, args, kwargs):
            current_x[i] = _hidden_arg(args, kwargs)
            if capture and i == last:
                captured.append(current_x[i].detach().to("cpu", torch.float32, copy=True))
        return hook

    def a_hook(i):
        def hook(module, inputs, output):
            stats.layers[i].update(current_x[i], first_tensor(output))
        return hook

    def block_hook(i):
        def hook(module, inputs, output):
            stats.layers[i].update_block(current_x[i], first_tensor(output))
            if i == last:
                raise _StopForward
        return hook

    def replay(module, args, kwargs):
        hidden = enter.hidden[batch_index[0]].to(_hidden_arg(args, kwargs))
        if args:
            return (hidden,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handles = []
    for i in wanted:
        layer = all_layers[i]
        handles += [layer.x_tap.register_forward_pre_hook(x_hook(i), with_kwargs=True),
                    layer.a_tap.register_forward_hook(a_hook(i)),
                    layer.block.register_forward_hook(block_hook(i))]
    stack = layer_list(model)
    skipped = {}
    if enter is not None:
        skipped = {i: stack[i] for i in range(enter.layer)}
        for i in skipped:
            stack[i] = _Passthrough()
        handles.append(stack[enter.layer].register_forward_pre_hook(replay, with_kwargs=True))
    start = stats.meta["batches_done"]
    try:
        bar = tqdm(range(start, n_batches), desc="nbl statistics", unit="batch", disable=not progress,
                   initial=start, total=n_batches)
        for b in bar:
            batch_index[0] = b
            batch = blocks[b * batch_size:(b + 1) * batch_size].to(model.device)
            try:  # the bare transformer: the LM head's logits are not needed here
                model.base_model(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
            stats.meta["batches_done"] = b + 1
            stats.meta["tokens"] = stats.tokens
            if checkpoint and ((b + 1) % checkpoint_every == 0 or b + 1 == n_batches):
                stats.save(checkpoint)
    finally:
        for h in handles:
            h.remove()
        for i, module in skipped.items():
            stack[i] = module
        current_x.clear()
    if capture:
        stats.entry = Entry(last, captured)
    return stats
