"""A training step's randomness, all from one CPU generator per step (:func:`step_generator`): the
batch (:func:`draw_batch`, :class:`BatchSource`: image indices, flips, diffusion steps, noise) and a
slimmable network's sandwich widths (:func:`sandwich_widths`). Under data parallelism every process
draws the global batch and keeps its slice (:func:`missingu.distributed.shard`), so the draws do
not depend on the process count. Shared by training and the speed benchmark."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import distributed
from .config import derived_seed
from .data import to_model_range
from .diffusion import Diffusion
from .models.ddpm import is_slimmable


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator that supplies all randomness of training step ``step``."""
    return torch.Generator().manual_seed(derived_seed(seed, step))


def steps_and_noise(diffusion: Diffusion, n: int, shape: Sequence[int], g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` uniform diffusion steps, then ``n`` standard normal noise images of ``shape``, from ``g``
    (in this order: a batch's last draws)."""
    return diffusion.sample_timesteps(n, g), torch.randn((n, *shape), generator=g)


def draw_batch(
    images: Tensor, diffusion: Diffusion, batch_size: int, hflip: bool, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x0, t, noise)`` for one step: uniform images (with replacement), optional flips,
    uniform steps, standard normal noise; all from ``g``."""
    idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
    x0 = to_model_range(images[idx])
    if hflip:
        flip = torch.rand(batch_size, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    t, noise = steps_and_noise(diffusion, batch_size, x0.shape[1:], g)
    return x0, t, noise


class BatchSource:
    """The batches of :func:`draw_batch`, on ``device``. With ``on_device`` (``speed.data_on_device``)
    the images are converted to the model range once, on the CPU, and kept on the device; each
    step's indices and flips are still drawn on the CPU from the step's generator and the batch is
    gathered on the device, so the values are the same to the bit and only the image copy is saved."""

    def __init__(self, images: Tensor, diffusion: Diffusion, batch_size: int, hflip: bool,
                 device: torch.device, on_device: bool = False):
        self.diffusion, self.batch_size, self.hflip, self.device = diffusion, batch_size, hflip, device
        self.on_device = on_device and device.type == "cuda"
        self.images = to_model_range(images.cpu()).to(device) if self.on_device else images.cpu()

    def __call__(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        if not self.on_device:
            return tuple(v.to(self.device, non_blocking=True) for v in distributed.shard(draw_batch(
                self.images, self.diffusion, self.batch_size, self.hflip, g)))
        n = self.batch_size
        idx = torch.randint(0, self.images.shape[0], (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5 if self.hflip else None
        t, noise = steps_and_noise(self.diffusion, n, self.images.shape[1:], g)
        idx, t, noise = distributed.shard((idx, t, noise))
        x0 = self.images[idx.to(self.device)]
        if flip is not None:
            (flip,) = distributed.shard((flip,))
            x0 = torch.where(flip.to(self.device)[:, None, None, None], x0.flip(-1), x0)
        return x0, t.to(self.device), noise.to(self.device, non_blocking=True)

    def redraw(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Fresh ``(t, noise)`` for the same batch (``sandwich_noise: per_width``): the global
        batch's from ``g``, as :func:`draw_batch` draws them, this process's slice, on the device."""
        t, noise = distributed.shard(steps_and_noise(self.diffusion, self.batch_size, self.images.shape[1:], g))
        return t.to(self.device), noise.to(self.device, non_blocking=True)


def sandwich_widths(model: nn.Module, g: torch.Generator) -> list[float | None]:
    """The widths one step backpropagates: a slimmable network's sandwich (Yu & Huang 2019, as DDSM
    trains: full, smallest and one middle width drawn from ``g``); ``[None]`` for any other."""
    if not is_slimmable(model):
        return [None]
    widths = sorted(model.config.widths, reverse=True)
    middle = widths[1:-1]
    chosen = [widths[0], widths[-1]]
    if middle:
        chosen.append(middle[int(torch.randint(len(middle), (1,), generator=g))])
    return chosen


__all__ = ["BatchSource", "draw_batch", "sandwich_widths", "step_generator", "steps_and_noise"]
