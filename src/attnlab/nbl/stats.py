"""Sufficient statistics of X and A per layer, streamed in float64: never N x d activations (the official
code stores them all; the statistics are all that Prop. 3.1 and Thm 3.2 of the paper need).

Each batch is reduced to its count, means and centred second moments, merged into the running totals
with Chan's parallel update (exact, and stable when the residual stream has huge means).
Memory is O(L d^2), each layer's totals on the device that layer runs on. The statistics are a folder: one
safetensors file per layer, recording how many batches it has seen, and ``stats.json``; checkpoints rewrite a
few layer files at a time, and an interrupted collection resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_path, atomic_write_json
from ..core.errors import AttnlabError
from ..core.hf import decoder_layers, first_tensor, layer_list

STATS_SCHEMA = "attnlab.nbl.stats/2"
#: the files of a statistics folder: one per layer (a checkpoint rewrites a few at a time) and the manifest
LAYER_FILE, MANIFEST = "layer-{:03d}.safetensors", "stats.json"
#: batches between two writes of a layer's checkpoint file
CHECKPOINT_EVERY = 8
_TENSORS = ("mean_x", "mean_a", "m2_xx", "m2_xa", "m2_aa")


def unit_rows(h: torch.Tensor, d: int) -> torch.Tensor:
    """The token rows of ``h`` (..., d) as unit vectors in float32 (N, d): cosines become dot products."""
    return torch.nn.functional.normalize(h.reshape(-1, d).float(), dim=-1)


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
    #: [j] = sum over tokens of the angular distance arccos(cos(x_j, block output)) / pi from the input of
    #: layer j <= this layer to this block's output (Gromov et al.; the run of layers j..this one); float64
    angular: torch.Tensor | None = None
    batches: int = 0            # calibration batches merged (each layer's own count: see Stats.load)

    #: where the totals live: None until the first batch, which puts them on its own device (the device of the
    #: layer that produced it, so a model spread over several GPUs keeps each layer's statistics on its GPU);
    #: "cpu" streams them there, one copy per batch
    device: torch.device | str | None = None

    def __post_init__(self):
        for name in ("mean_x", "mean_a"):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(self.d, dtype=torch.float64, device=self.device or "cpu"))
        for name in ("m2_xx", "m2_xa", "m2_aa"):
            if getattr(self, name) is None:  # allocated with the first batch, on that batch's device
                setattr(self, name, None if self.device is None else
                        torch.zeros(self.d, self.d, dtype=torch.float64, device=self.device))

    def _place(self, device: torch.device) -> torch.device:
        """The device of the totals, allocating (or moving) them there before the first batch is merged."""
        if self.device is None:
            self.device = device
        dev = torch.device(self.device)
        for name in _TENSORS:
            t = getattr(self, name)
            if t is None:
                setattr(self, name, torch.zeros(self.d, self.d, dtype=torch.float64, device=dev))
            elif t.device != dev:  # loaded from a checkpoint (on the CPU): moved once
                setattr(self, name, t.to(dev))
        return dev

    def update(self, x: torch.Tensor, a: torch.Tensor) -> None:
        """Merge a batch of token rows x, a (N x d, any dtype/device) into the totals (Chan et al.'s update).

        The batch's moments are computed on the batch's device in float64 and reach the totals' device as one
        packed tensor (one copy per batch when the totals are elsewhere)."""
        dev = self._place(x.device)
        x, a = x.reshape(-1, self.d), a.reshape(-1, self.d)
        x32, a32 = x.float(), a.float()
        cos = torch.nn.functional.cosine_similarity(x32, x32 + a32, dim=-1).sum(dtype=torch.float64)
        x, a = x.to(torch.float64), a.to(torch.float64)
        nb = x.shape[0]
        mx, ma = x.mean(0), a.mean(0)
        xc, ac = x - mx, a - ma
        dx, da = mx - self.mean_x.to(x.device), ma - self.mean_a.to(x.device)  # d values each
        n = self.n + nb
        w = self.n * nb / n
        packed = torch.cat([(xc.T @ xc + w * torch.outer(dx, dx)).reshape(-1),
                            (xc.T @ ac + w * torch.outer(dx, da)).reshape(-1),
                            (ac.T @ ac + w * torch.outer(da, da)).reshape(-1),
                            dx * nb / n, da * nb / n, cos.reshape(1)]).to(dev)
        dd = self.d * self.d
        self.m2_xx += packed[:dd].view(self.d, self.d)
        self.m2_xa += packed[dd:2 * dd].view(self.d, self.d)
        self.m2_aa += packed[2 * dd:3 * dd].view(self.d, self.d)
        self.mean_x += packed[3 * dd:3 * dd + self.d]
        self.mean_a += packed[3 * dd + self.d:3 * dd + 2 * self.d]
        self.cos_attention += float(packed[-1])
        self.n = n

    def update_block(self, out: torch.Tensor, starts: torch.Tensor, start_layers: list[int]) -> None:
        """Merge a batch of block outputs ``out``; ``starts`` (J, N, d) are the unit rows (:func:`unit_rows`) of the
        inputs of layers ``start_layers``: earlier ones, then this one (the last row, whose cosine with the output
        is ShortGPT's block influence), for the angular distances of the runs ending here, all in one product."""
        cos = torch.einsum("jnd,nd->jn", starts.to(out.device), unit_rows(out, self.d))
        self.cos_block += float(cos[-1].sum(dtype=torch.float64))
        self.n_block += cos.shape[1]
        if self.angular is None or len(self.angular) <= max(start_layers):
            grown = torch.zeros(max(start_layers) + 1, dtype=torch.float64)
            if self.angular is not None:
                grown[:len(self.angular)] = self.angular
            self.angular = grown
        self.angular[start_layers] += (torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi).sum(1, dtype=torch.float64).cpu()

    @property
    def mean_angular(self) -> torch.Tensor:
        """[j]: the mean angular distance from layer j's input to this block's output (see ``angular``)."""
        if self.angular is None or not len(self.angular):
            raise AttnlabError("these statistics hold no angular distances (collected by an older attnlab); "
                               "collect them again")
        return self.angular / max(self.n_block, 1)

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(C_XX, C_XA, C_AA) with divisor N - 1, as float64 numpy arrays."""
        if self.n < 2 or self.m2_xx is None:
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

    @property
    def batches_done(self) -> int:
        """Calibration batches every layer has counted (a checkpoint writes some layers before others)."""
        return min((s.batches for s in self.layers.values()), default=0)

    def save_layer(self, folder: str | Path, i: int) -> Path:
        """Write layer ``i``'s file of the statistics folder ``folder`` (atomically; only that layer's tensors
        are copied to the CPU)."""
        from safetensors.torch import save_file

        s = self.layers[i]
        tensors = {name: (torch.zeros(s.d, s.d, dtype=torch.float64) if t is None else t.detach().cpu())
                   for name in _TENSORS for t in [getattr(s, name)]}
        tensors["scalars"] = torch.tensor([s.n, s.cos_attention, s.cos_block, s.n_block], dtype=torch.float64)
        tensors["angular"] = torch.zeros(0, dtype=torch.float64) if s.angular is None else s.angular.detach().cpu()
        meta = {"schema": STATS_SCHEMA, "fingerprint": self.fingerprint, "layer": str(i), "batches": str(s.batches)}
        path = Path(folder) / LAYER_FILE.format(i)
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=meta)
        return path

    def save_manifest(self, folder: str | Path) -> Path:
        """Write ``stats.json`` of ``folder``: the model, the layers and what they were collected on."""
        self.meta["batches_done"] = self.batches_done
        d = next(iter(self.layers.values())).d if self.layers else 0
        return atomic_write_json(Path(folder) / MANIFEST, {"schema": STATS_SCHEMA, "fingerprint": self.fingerprint,
                                                           "layers": sorted(self.layers), "d": d, "meta": self.meta})

    def save(self, folder: str | Path) -> Path:
        """Write the statistics folder: one safetensors file per layer and ``stats.json``."""
        for i in self.layers:
            self.save_layer(folder, i)
        self.save_manifest(folder)
        return Path(folder)

    @property
    def complete(self) -> bool:
        """Whether every calibration batch has been counted (False for an interrupted collection)."""
        return self.meta.get("batches_done", 0) >= self.meta.get("n_batches", 0)

    @staticmethod
    def discard(path: str | Path) -> None:
        """Remove the statistics in folder ``path`` (its manifest first: a half-removed folder is not one)."""
        path = Path(path)
        (path / MANIFEST).unlink(missing_ok=True)
        for file in path.glob(LAYER_FILE.replace("{:03d}", "[0-9][0-9][0-9]")):
            file.unlink()

    @staticmethod
    def peek(path: str | Path) -> dict | None:
        """The ``meta`` of a statistics folder without reading its tensors; None when ``path`` is not one."""
        try:
            doc = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
            return doc["meta"] if doc.get("schema") == STATS_SCHEMA else None
        except (OSError, ValueError, KeyError, AttributeError):  # no manifest, or not ours: not a statistics folder
            return None

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None) -> Stats:
        """Load a statistics folder; with ``fingerprint``, refuse one collected on another model. Each layer
        counts the batches its file holds, so a checkpoint interrupted between two layer files resumes; a layer
        with no file yet (interrupted before its first write) starts at 0."""
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise AttnlabError(f"statistics not found: {path}")
        try:
            if not path.is_dir():
                raise ValueError("a file")
            doc = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            if doc.get("schema") != STATS_SCHEMA:
                raise ValueError(f"schema {doc.get('schema')!r}")
            header_fp, wanted, meta = doc["fingerprint"], [int(i) for i in doc["layers"]], dict(doc["meta"])
            d = int(doc["d"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            why = str(e) if isinstance(e, ValueError) and not isinstance(e, json.JSONDecodeError) else \
                f"no readable {MANIFEST}"
            raise AttnlabError(f"{path}: not an attnlab NBL statistics folder ({why}); give the folder "
                               f"`attnlab nbl collect -o` wrote, or collect again") from None
        if fingerprint is not None and header_fp != fingerprint:
            raise AttnlabError(f"{path}: statistics were collected on another model "
                               f"(fingerprint {header_fp}, this model {fingerprint}); collect them again")
        layers = {}
        for i in wanted:
            file = path / LAYER_FILE.format(i)
            if not file.exists():
                layers[i] = LayerStats(d)
                continue
            try:
                with safe_open(str(file), framework="pt") as f:
                    header = f.metadata() or {}
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
                if header.get("fingerprint") != header_fp or header.get("layer") != str(i):
                    raise ValueError("written for another model or layer")
                n, ca, cb, nb = tensors["scalars"].tolist()
                angular = tensors.get("angular")
                layers[i] = LayerStats(d=tensors["mean_x"].numel(), n=int(n), cos_attention=ca, cos_block=cb,
                                       n_block=int(nb), batches=int(header["batches"]),
                                       angular=angular if angular is not None and len(angular) else None,
                                       **{name: tensors[name] for name in _TENSORS})
            except Exception as e:  # safetensors raises its own error types for damaged files
                raise AttnlabError(f"{file}: not a readable statistics file ({type(e).__name__}: {e}); collect "
                                   f"again") from None
        stats = cls(header_fp, layers, meta)
        stats.meta["batches_done"] = stats.batches_done
        return stats


def _stored(model, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The values of state-dict entry ``name``: ``tensor`` itself, or, for a weight that accelerate offloaded
    (a meta tensor on the model), the copy its hook loads at forward time (``weights_map``)."""
    if tensor.device.type != "meta":
        return tensor
    path, _, leaf = name.rpartition(".")
    hook = getattr(model.get_submodule(path), "_hf_hook", None)
    weights = getattr(hook, "weights_map", None)
    if weights is None or leaf not in weights:
        raise AttnlabError(f"{name} is on the meta device with no offloaded copy; load the model with its weights")
    return weights[leaf]


def fingerprint(model, portable: bool = False) -> str:
    """Identifies a model by its config and a sample of its weights (first 4096 values of each tensor); the
    same for a model dispatched over devices and disk by accelerate as for the model in one place.

    ``portable``: the same whether the model was loaded in float32 or bfloat16 (the config without its dtype,
    the samples rounded to bfloat16): how ``eval`` recognises the base a linearized model was written from."""
    if portable:
        config = {k: v for k, v in model.config.to_dict().items() if k not in ("dtype", "torch_dtype")}
        h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    else:
        h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            sample = _stored(model, name, p).detach().reshape(-1)[:4096]
            if portable:
                sample = sample.to(torch.bfloat16)
            h.update(sample.to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def input_device(model) -> torch.device:
    """Where the token ids go: the device of the embeddings (accelerate's hook moves them on when the
    embeddings run elsewhere; a meta device means offloaded, and the ids stay on the CPU)."""
    weight = model.get_input_embeddings().weight
    return weight.device if weight.device.type != "meta" else torch.device("cpu")


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
            stats: Stats | None = None, checkpoint: str | Path | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
            progress: bool = True, meta: dict | None = None, enter: Entry | None = None,
            capture: bool = False, stats_device: str | None = None) -> Stats:
    """Stream ``blocks`` (n_blocks x seq_len token ids) through ``model`` and accumulate per-layer statistics.

    ``layers`` restricts collection (and the forward pass stops after the last of them). With ``stats`` given
    (e.g. loaded from ``checkpoint``), batches every layer has counted are skipped (and each layer skips those
    it alone has), so a collection resumes. Each layer's file in the ``checkpoint`` folder is rewritten
    atomically every ``checkpoint_every`` batches, the layers in turn (one checkpoint writes about
    1/``checkpoint_every`` of them, never all), and every layer at the end. ``enter`` replays the residual
    stream entering ``enter.layer`` instead of computing the layers before it; ``capture`` keeps the stream
    entering the last collected layer in ``stats.entry``. ``stats_device`` (e.g. "cpu") keeps every layer's
    totals there instead of on the device the layer runs on (one copy of each batch's moments per layer).
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
        stats = Stats(fingerprint(model), {i: LayerStats(d, device=stats_device) for i in wanted}, dict(meta or {}))
    elif stats_device is not None:
        for st in stats.layers.values():
            st.device = stats_device
    stats.meta["batches_done"] = stats.batches_done
    stats.scores.clear()  # scores of the statistics before this collection
    n_batches = (len(blocks) + batch_size - 1) // batch_size
    stats.meta.update({"batch_size": batch_size, "seq_len": int(blocks.shape[1]), "n_batches": n_batches})
    current_x: dict[int, torch.Tensor] = {}
    # the unit rows of every wanted layer's input in this batch, stacked for update_block's one product
    units: dict[str, torch.Tensor] = {}
    position = {i: p for p, i in enumerate(wanted)}
    last = wanted[-1]
    captured: list[torch.Tensor] = []
    batch_index = [0]

    def x_hook(i):
        def hook(module, args, kwargs):
            current_x[i] = _hidden_arg(args, kwargs)
            rows = unit_rows(current_x[i], d)
            if "stack" not in units or units["stack"].shape[1] != rows.shape[0]:  # first batch, or a shorter last
                units["stack"] = torch.empty(len(wanted), *rows.shape, device=rows.device)
            units["stack"][position[i]].copy_(rows)
            if capture and i == last:
                captured.append(current_x[i].detach().to("cpu", torch.float32, copy=True))
        return hook

    def a_hook(i):
        def hook(module, inputs, output):
            if stats.layers[i].batches == batch_index[0]:  # a layer saved ahead of the others has this batch
                stats.layers[i].update(current_x[i], first_tensor(output))
        return hook

    def block_hook(i):
        def hook(module, inputs, output):
            st = stats.layers[i]
            if st.batches == batch_index[0]:
                st.update_block(first_tensor(output), units["stack"][:position[i] + 1], wanted[:position[i] + 1])
                st.batches += 1
            del current_x[i]  # later layers need only its unit rows: the residual stream is not held whole
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
    start = stats.batches_done
    written = {i: stats.layers[i].batches for i in wanted}  # what each layer's checkpoint file holds
    if checkpoint:  # first, so that an interruption before any layer's first write still leaves a folder to resume
        stats.save_manifest(checkpoint)
    device = input_device(model)
    try:
        bar = tqdm(range(start, n_batches), desc="nbl statistics", unit="batch", disable=not progress,
                   initial=start, total=n_batches)
        for b in bar:
            batch_index[0] = b
            batch = blocks[b * batch_size:(b + 1) * batch_size].to(device)
            try:  # the bare transformer: the LM head's logits are not needed here
                model.base_model(input_ids=batch, use_cache=False)
            except _StopForward:
                pass
            stats.meta["batches_done"] = b + 1
            stats.meta["tokens"] = stats.tokens
            if checkpoint:
                due = [i for j, i in enumerate(wanted) if written[i] != stats.layers[i].batches and
                       (b + 1 == n_batches or (b + 1 + j) % checkpoint_every == 0)]
                for i in due:
                    stats.save_layer(checkpoint, i)
                    written[i] = stats.layers[i].batches
                if due:
                    stats.save_manifest(checkpoint)
    finally:
        for h in handles:
            h.remove()
        for i, module in skipped.items():
            stack[i] = module
        current_x.clear()
        units.clear()
    if capture:
        stats.entry = Entry(last, captured)
    return stats
