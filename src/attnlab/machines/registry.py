"""The executors, by name: the one place that lists them. ``attnlab machines run --executor`` offers these
names and the tests parametrize over them. Standard library only, so the CLI's parser reads it without
importing numpy or torch; a class is imported when it is used (:func:`executor_class`)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..core.errors import AttnlabError


@dataclass(frozen=True)
class ExecutorSpec:
    target: str | None  # "module:Class" inside attnlab.machines; None: the reference interpreter (no tokens)
    help: str


EXECUTORS: dict[str, ExecutorSpec] = {
    "table": ExecutorSpec("executors:TableExecutor", "next token = T[token][front], T derived from the certified "
                                                     "network (default)"),
    "kv": ExecutorSpec("executors:KVExecutor", "ring buffer: reads the oldest slot's cached value, sparse FFN, "
                                               "O(1) per token"),
    "table-native": ExecutorSpec("native:NativeTableExecutor", "the table executor's loop compiled with numba "
                                                               "(same certificate check, same tokens)"),
    "kv-native": ExecutorSpec("native:NativeKVExecutor", "the kv executor's loop compiled with numba (same "
                                                         "weight checks, same tokens)"),
    "dense": ExecutorSpec("executors:DenseExecutor", "full-window hardmax attention with the compiled matrices, "
                                                     "O(W) per token"),
    "reference": ExecutorSpec(None, "the reference TM/PM interpreter, no transformer (tokens counted by lemma A)"),
}

#: Export formats (`attnlab machines export --format`) and the runtimes `attnlab machines replay` drives.
FORMATS: tuple[str, ...] = ("safetensors", "onnx", "hf")
RUNTIMES: tuple[str, ...] = ("onnx", "torch")

#: The executors that generate tokens with the compiled network (all but the reference interpreter).
NETWORK_EXECUTORS: tuple[str, ...] = tuple(name for name, spec in EXECUTORS.items() if spec.target)


def executor_class(name: str) -> type:
    """The executor class registered as ``name`` (one of :data:`NETWORK_EXECUTORS`)."""
    spec = EXECUTORS.get(name)
    if spec is None or spec.target is None:
        raise AttnlabError(f"unknown executor {name!r} (use {', '.join(NETWORK_EXECUTORS)} or reference)")
    module, attr = spec.target.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)
