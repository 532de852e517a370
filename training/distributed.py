"""Data-parallel plumbing for ``torchrun``: one process per device, rank and world size from the environment.

``torchrun --nproc_per_node N`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; without them everything here describes a single process and does nothing. The backend
is NCCL on CUDA and gloo on the CPU.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from plumbing.strict import ConfigError
from plumbing.device import check_device


@dataclass(frozen=True)
class Context:
    """Where this process stands: its ``rank`` among ``world_size`` processes, its ``local_rank`` on
    this machine, and the ``device`` it trains on (``cuda:<local_rank>`` when CUDA is present)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def context() -> Context:
    """This process's :class:`Context`, from the ``torchrun`` environment (a single process without it):
    ``cuda:<LOCAL_RANK>`` when CUDA is present (a LOCAL_RANK without its own card is refused), else the CPU."""
    rank, local_rank, world_size = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1)
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    if not torch.cuda.is_available():
        return Context(rank, local_rank, world_size, torch.device("cpu"))
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:  # never two ranks on one card: NCCL refuses it, or they fight over its memory
        raise ConfigError(f"LOCAL_RANK={local_rank} but this machine has {count} CUDA device(s): start at most {count} "
                          "process(es) per machine (torchrun --nproc_per_node), or hide the GPUs (CUDA_VISIBLE_DEVICES=) "
                          "to train on the CPU")
    return Context(rank, local_rank, world_size, check_device(torch.device("cuda", local_rank)))


@contextlib.contextmanager
def session() -> Iterator[Context]:
    """Join the process group for the duration of a run (gloo on CPU, NCCL on CUDA) and leave it after.

    Single processes join nothing; a group the caller already initialised is used and left alone.
    """
    ctx = context()
    owned = ctx.distributed and not dist.is_initialized()
    if owned:
        if ctx.device.type == "cuda":
            torch.cuda.set_device(ctx.device)
        backend = "nccl" if ctx.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size)
    try:
        yield ctx
    finally:
        if owned:
            dist.destroy_process_group()


def is_primary() -> bool:
    """True on rank 0 (and in a single process): the one that logs and writes files."""
    return (dist.get_rank() if dist.is_initialized() else _env_int("RANK", 0)) == 0


def world_size() -> int:
    """The number of processes training together (1 in a single process)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def mean(value: float) -> float:
    """The mean of ``value`` over all ranks (``value`` itself in a single process)."""
    if not dist.is_initialized():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def sync_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank.

    DDP keeps parameters equal, but each rank updates its batch-norm running statistics on its own
    batches after the last broadcast; this makes every rank validate and save the same model.
    """
    if dist.is_initialized():
        for tensor in module.state_dict().values():
            dense = tensor.contiguous()  # channels_last weights are dense but not contiguous
            dist.broadcast(dense, src=0)
            if dense.data_ptr() != tensor.data_ptr():
                tensor.copy_(dense)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
