"""``nbl plan``: what the statistics pass will need, from the model's config alone (meta device, no weights).

The statistics of a layer are the float64 moments of :class:`~attnlab.nbl.stats.LayerStats`: three d x d
blocks (the centred sums of X X^T, X A^T, A A^T) and two means, 8 (3 d^2 + 2 d) bytes, on the device the layer
runs on. One update of a batch of B T tokens holds, on that device, X and A in float64 and centred (4 B T d
values of 8 bytes), their float32 copies for the cosines (3 B T d of 4 bytes) and the batch's three d x d
moments twice (computed, then packed into the one tensor that reaches the totals: 6 d^2 of 8 bytes). A
checkpoint writes one layer file at a time, so it copies one layer's statistics to the host.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..core.errors import AttnlabError

F64 = 8  # bytes of a float64


def layer_stats_bytes(d: int) -> int:
    """Bytes of one layer's running statistics: three float64 d x d blocks and two float64 means."""
    return F64 * (3 * d * d + 2 * d)


def update_bytes(d: int, tokens: int) -> int:
    """Peak working bytes of one update over ``tokens`` rows (see the module docstring): an upper bound."""
    return F64 * 4 * tokens * d + 4 * 3 * tokens * d + F64 * 6 * d * d


def stats_flops_per_token(d: int) -> int:
    """float64 FLOPs per token per layer of the three d x d moment updates (2 d^2 each)."""
    return 6 * d * d


def load_config(spec: str | Path):
    """The transformers config of ``spec``: a packaged name (its converted checkpoint's config when it exists,
    else the GGUF file's metadata: no weights are read), a checkpoint folder, or a ``config.json`` file."""
    from transformers import AutoConfig, PretrainedConfig

    from ..core.models import PACKAGED, cache_dir, checkpoint_dir, get, locate

    spec_str = str(spec)
    path = Path(spec_str)
    try:
        if path.is_file():
            return AutoConfig.for_model(**PretrainedConfig.get_config_dict(path)[0])
        if spec_str in PACKAGED and get(spec_str).fmt == "gguf":
            converted = cache_dir() / "models" / spec_str
            if (converted / "config.json").is_file():
                return AutoConfig.from_pretrained(converted)
            src = locate(get(spec_str))
            return AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
        return AutoConfig.from_pretrained(checkpoint_dir(spec_str))
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AttnlabError(f"{spec_str}: no readable model config ({first[:160]})") from None


def meta_model(config, dtype: str):
    """The model of ``config`` on the meta device (shapes only) in ``dtype``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from ..core.hf import family_of
    from ..core.runtime import torch_dtype

    loader = AutoModelForCausalLM if family_of(config).causal else AutoModel
    with torch.device("meta"):
        return loader.from_config(config, dtype=torch_dtype(dtype)).eval()


def _stats_device(device, devices: list) -> str:
    """Where a layer placed on ``device`` by a device map keeps its statistics: its GPU, or, for a layer on
    the CPU or disk, the execution device accelerate runs it on (the first GPU of the map, else the CPU)."""
    if isinstance(device, int):
        return str(device)
    gpus = [x for x in devices if isinstance(x, int)]
    return str(min(gpus)) if gpus else "cpu"


def plan(spec: str | Path, dtype: str = "float32", tokens: int = 16384, seq_len: int = 256, batch_size: int = 8,
         max_memory: dict[str, str] | None = None, checkpoint_every: int | None = None,
         stats_device: str | None = None) -> dict[str, Any]:
    """The memory (bytes) and FLOPs of collecting statistics of ``spec`` over ``tokens`` calibration tokens,
    and, with ``max_memory``, where ``--device-map auto`` puts each layer and its statistics (on its device, or
    all on ``stats_device``)."""
    from ..core.hf import decoder_layers, family_of
    from .stats import CHECKPOINT_EVERY

    checkpoint_every = checkpoint_every or CHECKPOINT_EVERY
    config = load_config(spec)
    family_of(config)  # an unsupported family is refused here, as when the model loads
    model = meta_model(config, dtype)
    layers = decoder_layers(model)
    d = config.hidden_size
    n_layers = len(layers)
    params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = sum(p.numel() for p in model.get_input_embeddings().parameters())
    per_layer = layer_stats_bytes(d)
    batch_tokens = batch_size * seq_len
    used = tokens // seq_len * seq_len
    forward_flops = 2 * (params - embedding) + 2 * n_layers * seq_len * d  # per token (Kaplan et al. Table 1)
    rows = [{"layer": layer.index, "stats_bytes": per_layer} for layer in layers]
    result: dict[str, Any] = {
        "model": str(spec), "model_type": config.model_type, "dtype": dtype, "layers": n_layers, "d": d,
        "stats_device": stats_device or "layer",
        "parameters": params, "model_bytes": model_bytes,
        "stats_bytes_per_layer": per_layer, "stats_bytes": per_layer * n_layers,
        "update_bytes": update_bytes(d, batch_tokens), "batch_tokens": batch_tokens,
        "checkpoint_layers_per_write": -(-n_layers // checkpoint_every), "checkpoint_host_bytes": per_layer,
        "calibration_tokens": used, "forward_flops": forward_flops * used,
        "stats_flops": stats_flops_per_token(d) * n_layers * used, "per_layer": rows,
    }
    if max_memory:
        result["devices"] = _placement(model, config, dtype, max_memory, rows, per_layer, stats_device)
    return result


def _placement(model, config, dtype: str, max_memory: dict[str, str], rows: list[dict], per_layer: int,
               stats_device: str | None = None) -> dict:
    """accelerate's device map of ``model`` within ``max_memory``; each row gets its layer's device and the
    device of its statistics; returns, per device, its budget, the model bytes and the statistics bytes."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes, convert_file_size_to_int

    from ..core.hf import family_of
    from ..core.runtime import torch_dtype

    try:
        budget = {int(k) if k.isdigit() else k: convert_file_size_to_int(v) for k, v in max_memory.items()}
    except ValueError as e:
        raise AttnlabError(f"--max-memory: {e} (give sizes such as 70GiB or 512MB)") from None
    quiet = logging.getLogger("accelerate.utils.modeling")
    level, _ = quiet.level, quiet.setLevel(logging.ERROR)  # a plan for GPUs this machine lacks is the point
    try:
        device_map = infer_auto_device_map(model, max_memory=budget, dtype=torch_dtype(dtype),
                                           no_split_module_classes=model._no_split_modules or [])
    finally:
        quiet.setLevel(level)
    sizes = compute_module_sizes(model, dtype=torch_dtype(dtype))
    devices = list(dict.fromkeys(device_map.values()))
    layers_path = family_of(config).layers
    out = {str(k): {"budget_bytes": v, "model_bytes": 0, "stats_bytes": 0} for k, v in budget.items()}
    for name, device in device_map.items():
        out.setdefault(str(device), {"budget_bytes": None, "model_bytes": 0, "stats_bytes": 0})
        out[str(device)]["model_bytes"] += sizes[name]
    for row in rows:
        prefix = f"{layers_path}.{row['layer']}"
        device = next(v for k, v in device_map.items() if k in ("", prefix) or prefix.startswith(k + "."))
        row["device"], row["stats_device"] = str(device), stats_device or _stats_device(device, devices)
        out.setdefault(row["stats_device"], {"budget_bytes": None, "model_bytes": 0, "stats_bytes": 0})
        out[row["stats_device"]]["stats_bytes"] += per_layer
    return out


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def render(p: dict[str, Any]) -> str:
    """The plan as the lines ``nbl plan`` prints."""
    lines = [f"{p['model']} ({p['model_type']}, {p['layers']} layers, d = {p['d']}): {p['parameters']:,} parameters, "
             f"{gib(p['model_bytes'])} in {p['dtype']}",
             f"statistics: {gib(p['stats_bytes_per_layer'])} per layer (float64: 3 d x d blocks + 2 means), "
             f"{gib(p['stats_bytes'])} in all, " + ("each layer's on the device it runs on"
                                                    if p["stats_device"] == "layer" else "on the CPU"),
             f"one update of {p['batch_tokens']} tokens: at most {gib(p['update_bytes'])} of working memory on "
             f"that device",
             f"checkpoints: {p['checkpoint_layers_per_write']} layer file(s) per write, one layer "
             f"({gib(p['checkpoint_host_bytes'])}) on the host at a time",
             f"{p['calibration_tokens']:,} calibration tokens: {p['forward_flops']:.3g} forward FLOPs, "
             f"{p['stats_flops']:.3g} float64 statistics FLOPs"]
    if "devices" in p:
        lines.append(f"{'device':>8} {'budget':>11} {'model':>11} {'statistics':>11}")
        for name, v in p["devices"].items():
            over = v["budget_bytes"] is not None and v["model_bytes"] + v["stats_bytes"] > v["budget_bytes"]
            lines.append(f"{name:>8} {gib(v['budget_bytes']):>11} {gib(v['model_bytes']):>11} "
                         f"{gib(v['stats_bytes']):>11}" + ("  model + statistics exceed the budget" if over else ""))
    return "\n".join(lines)
