"""Data-parallel training over several processes (``torchrun``), one GPU each or gloo on the CPU.

Every process draws the same global batch from the step's generator and trains on its own
contiguous slice of it; DistributedDataParallel averages the gradients, which is the gradient of
the global batch's mean loss, so N processes take the same steps as one process with the whole
batch (up to the order of float additions). Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch import distributed as dist


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes (NCCL on CUDA, gloo on the CPU) and return
    this process's device (``cuda:LOCAL_RANK`` for CUDA)."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def world() -> tuple[int, int]:
    """``(world_size, rank)``; ``(1, 0)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` inside DistributedDataParallel when there are several processes, else itself."""
    if world()[0] == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(tensors: Sequence[Tensor]) -> list[Tensor]:
    """This process's contiguous slice of each global-batch tensor."""
    size, rank = world()
    if size == 1:
        return list(tensors)
    per = tensors[0].shape[0] // size
    return [t[rank * per:(rank + 1) * per] for t in tensors]


def mean(value: Tensor) -> float:
    """The mean of a scalar over all processes (the global batch's loss from the slices' losses)."""
    size, _ = world()
    if size == 1:
        return value.item()
    total = value.detach().clone()
    dist.all_reduce(total)
    return (total / size).item()
