"""Data-parallel training over several processes (``torchrun``), one GPU each or gloo on the CPU.

Every process draws the same global batch from the step's generator and trains on its own
contiguous slice of it; DistributedDataParallel averages the gradients, which is the gradient of
the global batch's mean loss. Dropout does the same (:class:`SlicedDropout`): every process seeds
its RNG with the step's seed, draws the whole global batch's mask and applies its own slice of it,
so sample ``j`` of the global batch gets the mask it gets in one process, whatever the process
count. N processes therefore take the same steps as one process with the whole batch, dropout
included, up to the order of float additions (on one kind of device: a GPU's random stream is not
the CPU's). Rank 0 alone writes files.
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


class SlicedDropout(nn.Dropout):
    """Dropout whose mask is process ``rank``'s slice of the mask of the ``size`` processes' global
    batch: for a local batch of ``n``, ``keep = (U[rank n : (rank + 1) n] >= p)`` with ``U`` uniform
    of shape ``(size n, ...)`` from the global RNG, and ``y = x keep / (1 - p)`` (identity in eval).
    With ``size = 1`` it is ordinary dropout (another draw than ``nn.Dropout``'s)."""

    def __init__(self, p: float, size: int = 1, rank: int = 0):
        super().__init__(p)
        self.size, self.rank = size, rank

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.shape[0]
        u = torch.rand((self.size * n, *x.shape[1:]), device=x.device)[self.rank * n:(self.rank + 1) * n]
        return x * (u >= self.p) / (1 - self.p)


def slice_dropout(model: nn.Module) -> int:
    """Replace each active ``nn.Dropout`` of ``model`` (``p > 0``) by a :class:`SlicedDropout` of this
    process's rank (in place; no weights change); the number replaced."""
    size, rank = world()
    count = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, SlicedDropout(child.p, size, rank))
                count += 1
            elif isinstance(child, SlicedDropout):
                child.size, child.rank = size, rank
                count += 1
    return count


def shard(tensors: Sequence[Tensor]) -> list[Tensor]:
    """This process's contiguous slice of each global-batch tensor."""
    size, rank = world()
    if size == 1:
        return list(tensors)
    per = tensors[0].shape[0] // size
    return [t[rank * per:(rank + 1) * per] for t in tensors]


def means(values: Tensor) -> list[float]:
    """The means over all processes of a vector of values (the global batch's losses from the
    slices' losses), in one all-reduce."""
    size, _ = world()
    if size == 1:
        return values.tolist()
    total = values.detach().clone()
    dist.all_reduce(total)
    return (total / size).tolist()
