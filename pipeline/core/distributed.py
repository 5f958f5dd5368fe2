"""torch.distributed for hydramix: one process per GPU (or CPU worker), launched by ``torchrun``.

Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) every function here is a no-op: rank 0 of a
world of 1, the model is not wrapped, nothing is communicated, so the single-process path is unchanged.

Under ``torchrun`` a stage opens ``session()``, which joins the process group from the environment torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL for CUDA tensors and
gloo for CPU tensors. Training splits each GLOBAL batch into equal contiguous parts (``batch_part``), wraps the
trained modules in DistributedDataParallel (``wrap``) and averages logged losses (``mean_over_ranks``); only
rank 0 (``is_main``) shows progress and writes outputs. See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.core.errors import HydraMixError


@dataclass(frozen=True)
class Launch:
    """What torchrun told this process: its global rank, the number of processes, its rank on this node."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(env: dict[str, str] | None = None) -> Launch | None:
    """The torchrun launch described by ``env`` (default ``os.environ``), or None for a single process.

    A world of one process (``torchrun --nproc-per-node 1``) is the single-process path too. HydraMixError if
    the variables are malformed or inconsistent.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return None
    try:
        world_size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise HydraMixError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun), got "
            f"WORLD_SIZE={env.get('WORLD_SIZE')!r} RANK={env.get('RANK')!r} LOCAL_RANK={env.get('LOCAL_RANK')!r}"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise HydraMixError(f"inconsistent launch: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}")
    if world_size == 1:
        return None
    if "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        raise HydraMixError(
            "WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set: launch with torchrun (see docs/distributed.md)"
        )
    return Launch(rank=rank, world_size=world_size, local_rank=local_rank)


def active() -> bool:
    """True inside a process group (a torchrun launch with more than one process)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the process that logs and writes outputs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (no-op for a single process)."""
    if active():
        dist.barrier()


def on_main(work: Callable[[], None]) -> None:
    """Run ``work`` on rank 0 while the other processes wait; a HydraMixError it raises is raised on every
    process, so that all of them stop with the same message instead of waiting on rank 0."""
    message = None
    if is_main():
        try:
            work()
        except HydraMixError as exc:
            message = str(exc)
    if active():
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise HydraMixError(message)


@contextlib.contextmanager
def session() -> Iterator[Launch | None]:
    """Join the process group torchrun describes for the body, leave it afterwards; yields the Launch or None.

    Nested use (a stage called inside an open session) reuses the open group. On success every process waits
    at a barrier before leaving (nested or not), so a command returns only once rank 0 has written its outputs
    and the next command can read them. On an
    error the group is left without a barrier: torchrun sees the failing process and stops the others.
    """
    launch = launch_from_env()
    if launch is None:
        yield None
        return
    if active():  # nested: the group belongs to the outer session, but the closing barrier is still ours
        yield launch
        dist.barrier()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(launch.local_rank)  # "cuda" now means this process's GPU
        backend = "cpu:gloo,cuda:nccl"  # collectives on CPU tensors (e.g. a --device cpu run) still work
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=launch.rank, world_size=launch.world_size)
    try:
        yield launch
        dist.barrier()
    finally:
        dist.destroy_process_group()


def place(device: torch.device) -> torch.device:
    """The device this process computes on: ``cuda:LOCAL_RANK`` for a CUDA device inside a process group (one
    GPU per process; choose GPUs with CUDA_VISIBLE_DEVICES), otherwise ``device`` unchanged."""
    if active() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def part_of(batch_size: int, rank: int, world_size: int) -> slice:
    """Rows [r*B/W, (r+1)*B/W) of a global batch of ``batch_size`` for process ``rank``; HydraMixError unless
    W divides B (equal parts make the average of the per-process mean losses the global-batch mean)."""
    if batch_size % world_size:
        raise HydraMixError(
            f"batch_size {batch_size} is the global batch and must be divisible by the {world_size} processes; "
            f"use a multiple of {world_size} (e.g. {(batch_size // world_size + 1) * world_size})"
        )
    size = batch_size // world_size
    return slice(rank * size, (rank + 1) * size)


def batch_part(batch_size: int) -> slice:
    """This process's rows of a global batch (``slice(None)``: all of it, for a single process)."""
    if not active():
        return slice(None)
    return part_of(batch_size, rank(), world_size())


def wrap(module: nn.Module, device: torch.device, broadcast_buffers: bool = True) -> nn.Module:
    """``module`` in DistributedDataParallel inside a process group (its gradients are averaged over the
    processes in backward), the module itself otherwise. ``broadcast_buffers``: copy rank 0's buffers to every
    process before each forward (False: they evolve per process, see ``average_buffers``). The caller keeps the
    plain module for optimisers, checkpoints and frozen uses."""
    if not active():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    # torch >= 2.14 renames the option (the old name warns); buffers are synchronised once at init either way.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=broadcast_buffers)
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=broadcast_buffers)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def mean_over_ranks(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Scalar tensors averaged over the processes (one all-reduce); returned unchanged for one process."""
    if not active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= world_size()
    return dict(zip(values, stacked.unbind(), strict=True))


def sum_over_ranks(value: int) -> int:
    """An integer summed over the processes (``value`` for one process)."""
    if not active():
        return value
    total = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return int(total.item())


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process; ``[obj]`` for one process."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the processes, in place, so every
    process ends with the same state_dict; integer buffers (step counters) are equal already."""
    if not active():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer /= world_size()
