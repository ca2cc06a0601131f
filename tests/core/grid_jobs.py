"""Job functions for tests/core/test_grid.py, importable by name in spawned workers (tests/core is on sys.path)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(args):
    """Record the run in ``args['runs']`` (one line per execution), then return the square and this
    process's torch threads."""
    import torch

    if args.get("sleep"):
        time.sleep(args["sleep"])
    if args.get("fail") == args["x"]:
        raise KeyboardInterrupt if args.get("interrupt") else RuntimeError(f"job {args['x']} failed")
    with open(Path(args["runs"]), "a", encoding="utf-8") as f:
        f.write(f"{args['x']} {os.getpid()}\n")
    return {"x": args["x"], "y": args["x"] ** 2, "threads": torch.get_num_threads(), "pid": os.getpid()}


def visible_gpu(args):
    """The GPU this worker was given (its CUDA_VISIBLE_DEVICES) and its pid."""
    time.sleep(0.3)
    return {"x": args["x"], "y": 0, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


def die(args):
    """Job ``args['fail']`` ends its worker process at once (as the kernel's OOM killer would); others square."""
    if args.get("fail") == args["x"]:
        os._exit(9)
    return square(args)
