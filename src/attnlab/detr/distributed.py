"""torchrun DDP for `detr train`: the process group (NCCL on CUDA, gloo on the CPU), the few collectives
training needs, and each process's share of every step's batch.

One process (no torchrun, or ``WORLD_SIZE=1``) is the same code with world size 1: every collective is
then the identity, so a single-process run is unchanged."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..core.errors import AttnlabError
from ..core.runtime import choose_device

T = TypeVar("T")
#: What torchrun sets for every process and the env:// rendezvous needs.
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Group:
    """This process's place in the run (``rank`` of ``world``, training on ``device``) and the collectives
    over all of them; with ``world == 1`` each collective returns its input."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def sum(self, value: float) -> float:
        """``value`` summed over the processes (float64, so that object counts stay exact)."""
        if self.world == 1:
            return value
        t = torch.tensor(value, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t)

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0, its result on every process; an :class:`AttnlabError` it raises is raised
        on every process (so that no process waits for one that gave up)."""
        if self.world == 1:
            return fn()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = (True, fn())
            except AttnlabError as e:
                box[0] = (False, str(e))
        torch.distributed.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if not ok:
            raise AttnlabError(value)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def launched_as_rank0() -> bool:
    """Whether this process is rank 0 of a torchrun job, or not under torchrun at all: the one that prints."""
    return os.environ.get("RANK", "0") == "0"


def _world_size() -> int:
    text = os.environ.get("WORLD_SIZE", "1")
    if not text.isdigit() or int(text) < 1:
        raise AttnlabError(f"WORLD_SIZE={text!r} is not a positive integer (torchrun sets it; unset it to train in "
                           "one process)")
    return int(text)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Group]:
    """The :class:`Group` of this process. Under torchrun (``WORLD_SIZE > 1``) a process group is made for
    the run and destroyed after it: NCCL with GPU ``LOCAL_RANK`` when ``device`` resolves to CUDA, gloo on
    the CPU. ``WORLD_SIZE > 1`` without torchrun's rendezvous variables is a one-line error."""
    world = _world_size()
    device = choose_device(device)
    if world == 1:
        yield Group(device=device)
        return
    import torch.distributed as dist

    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing or not dist.is_available():
        why = f"{', '.join(missing)} unset" if missing else "this torch has no torch.distributed"
        raise AttnlabError(f"WORLD_SIZE={world} but no process group can be made ({why}); launch with "
                           "`torchrun --nproc_per_node N -m attnlab detr train ...`, or unset WORLD_SIZE")
    kind = device.partition(":")[0]
    if kind == "cuda":
        local, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= count:
            raise AttnlabError(f"local rank {local} needs GPU {local}, this machine has {count}; start at most "
                               f"{count} processes per machine (--nproc_per_node)")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    elif kind != "cpu":
        raise AttnlabError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not {device}")
    made = not dist.is_initialized()
    if made:
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if made:
            dist.destroy_process_group()


def shard_batches(order: list[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Process ``rank``'s part of each step's batch: ``order`` (the epoch's permutation) cut into global
    batches of ``batch_size`` images, each dealt out ``rank::world`` (DistributedSampler's interleaving, so
    that one process with the same ``batch_size`` sees the same images per step). Shares differ by at most
    one image. A last batch with fewer images than processes is padded with the permutation's first images,
    as DistributedSampler pads, so that no process gets an empty batch."""
    if batch_size < world:
        raise AttnlabError(f"--batch-size {batch_size} is the global batch, split over the processes: give at "
                           f"least one image per process ({world})")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if batches and len(batches[-1]) < world:
        batches[-1] = batches[-1] + [order[i % len(order)] for i in range(world - len(batches[-1]))]
    return [b[rank::world] for b in batches]
