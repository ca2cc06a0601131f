"""Seeding, thread pinning, device choice and the environment record every run carries."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import AttnlabError

#: Packages whose versions go into every run record (absent ones are recorded as None).
RECORDED_PACKAGES = ("attnlab", "torch", "numpy", "scipy", "transformers", "safetensors", "peft",
                     "pycocotools", "matplotlib", "gguf")


def seed_everything(seed: int, torch: bool = True) -> int:
    """Seed Python, numpy and (unless ``torch=False``) torch, CPU and CUDA, with ``seed``; returns it."""
    if not isinstance(seed, int) or seed < 0:
        raise AttnlabError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if torch:
        import torch as torch_

        torch_.manual_seed(seed)
    return seed


def configure(seed: int, threads: int | None, torch: bool = True) -> None:
    """What the CLI does before every command: seed Python and numpy, pin BLAS threads, and, unless the
    command is light (``torch=False``: help, listings, planners), import torch and seed and pin it too.
    A light command that turns out to need torch calls :func:`configure` again with ``torch=True``."""
    seed_everything(seed, torch=torch)
    if torch:
        set_threads(threads)
    elif threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")


def set_threads(threads: int | None) -> int:
    """Pin torch's intra-op threads and numpy's BLAS threads to the same count (None keeps torch's count
    and aligns BLAS with it); returns the count in effect.

    Aligning BLAS matters on a shared machine: an OpenBLAS eigendecomposition with more threads than free
    cores spins and was measured 15x slower than with one thread.
    """
    import torch
    from threadpoolctl import threadpool_limits

    if threads is not None:
        if threads < 1:
            raise AttnlabError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    threadpool_limits(limits=torch.get_num_threads(), user_api="blas")
    return torch.get_num_threads()


#: What ``--device`` accepts (``cuda:N`` too); ``auto`` picks CUDA, then Apple's MPS, then the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")
#: What ``--dtype`` accepts: the model's compute precision (statistics that must be float64 stay float64).
DTYPES = ("float32", "bfloat16", "float16")


def choose_device(preference: str = "auto") -> str:
    """The torch device for ``preference`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``); asking for a
    device this machine does not have is a one-line error naming the devices it has."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    kind, _, index = preference.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise AttnlabError(f"unknown device {preference!r} (use auto, cpu, cuda, cuda:N or mps)")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise AttnlabError(f"device {preference!r} requested but no CUDA GPU is available (use --device cpu)")
        if index and int(index) >= count:
            raise AttnlabError(f"device {preference!r} requested but this machine has {count} CUDA GPU(s) "
                               f"(use cuda:0 to cuda:{count - 1})")
    if kind == "mps" and not has_mps:
        raise AttnlabError("device 'mps' requested but Apple's MPS backend is not available (use --device cpu)")
    return preference


def torch_dtype(name: str):
    """The ``torch.dtype`` called ``name`` (one of :data:`DTYPES`), or a one-line error."""
    import torch

    if name not in DTYPES:
        raise AttnlabError(f"unknown dtype {name!r} (use {', '.join(DTYPES)})")
    return getattr(torch, name)


def synchronize(device: str) -> None:
    """Wait for the queued work on ``device`` (so that a timer measures the work, not its launch)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the attnlab checkout this code runs from, when it is a git checkout."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine(device: str = "cpu") -> dict[str, Any]:
    """What a result was computed on, for its own record line: the CPU model (or the GPU's name for a CUDA
    ``device``) and the torch build."""
    import torch

    name = torch.cuda.get_device_name(device) if str(device).startswith("cuda") else cpu_model()
    return {"machine": name, "torch": torch.__version__}


def environment() -> dict[str, Any]:
    """What this run ran with: versions, machine, threads, device. Recorded in every run record.

    torch's threads and CUDA device are recorded when the run imported torch (a light command does not)."""
    torch = sys.modules.get("torch")
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "cuda": torch.cuda.get_device_name(0) if torch and torch.cuda.is_available() else None,
        "git_commit": git_commit(),
        "argv": sys.argv[1:],
    }
    env["versions"] = {name: package_version(name) for name in RECORDED_PACKAGES}
    return env
