"""The denoising task's config, its start steps and its work (:mod:`missingu.denoise` runs it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, choose, positive
from ..task import Work, image_values
from .diffusion import DiffusionConfig, betas

REVERSE = ("ddpm", "posterior_mean", "ddim")
PROTOCOLS = ("matched", "sweep")
METRICS = ("psnr", "ssim", "lpips")
# Files `missingu denoise` writes beside its summary CSV (missingu.io.sidecars).
SIDECARS = {"curves": ".curves.csv", "images": ".images.csv", "examples": ".examples.pt", "record": ".json"}


@dataclass(frozen=True)
class DenoiseConfig:
    """The denoising experiment: noise levels ``sigmas`` (on the [0, 1] image scale), how many test
    images (``num_images``, the first of the test split, in batches of ``batch_size``), which
    ``protocols``, the ``reverse`` update, the sweep's fixed start step (``sweep_start``; ``null``:
    the matched step of the largest sigma), whether to compute LPIPS and how many example images
    per sigma go into the grid."""

    sigmas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
    num_images: int = 32
    batch_size: int = 32
    protocols: tuple[str, ...] = PROTOCOLS
    reverse: str = "posterior_mean"
    sweep_start: int | None = None
    lpips: bool = True
    examples: int = 4

    def __post_init__(self) -> None:
        if not self.sigmas:
            raise ConfigError("sigmas: needs at least one noise level")
        for s in self.sigmas:
            if not (isinstance(s, (int, float)) and 0 < s <= 1):
                raise ConfigError(f"sigmas: {s!r} is not a noise level; allowed: numbers in (0, 1]")
        if len(set(self.sigmas)) != len(self.sigmas):
            raise ConfigError("sigmas: each noise level at most once")
        positive(self.num_images, "num_images")
        positive(self.batch_size, "batch_size")
        if not self.protocols:
            raise ConfigError(f"protocols: needs at least one; allowed: {', '.join(PROTOCOLS)}")
        for p in self.protocols:
            choose(dict.fromkeys(PROTOCOLS), p, "protocol", "protocols")
        choose(dict.fromkeys(REVERSE), self.reverse, "reverse update", "reverse")
        if self.sweep_start is not None:
            positive(self.sweep_start, "sweep_start")
        if self.examples < 0:
            raise ConfigError(f"examples: {self.examples} is negative; allowed: 0 or more")


def matched_step(diffusion: DiffusionConfig, sigma: float) -> int:
    """``t*``: the step whose ``alpha_bar`` is closest to ``1 / (1 + 4 sigma^2)`` (noise of std
    ``sigma`` on [0, 1] images is ``2 sigma`` on the model's [-1, 1] scale)."""
    target = 1.0 / (1.0 + 4.0 * sigma * sigma)
    alpha_bar = np.cumprod(1 - betas(diffusion))
    return int(np.argmin(np.abs(alpha_bar - target)))


def start_steps(config: DenoiseConfig, diffusion: DiffusionConfig) -> tuple[dict[float, int], int]:
    """The matched start step of every sigma, and the sweep's one start step (``sweep_start``, else
    the matched step of the largest sigma; at most T-1)."""
    starts = {s: matched_step(diffusion, s) for s in config.sigmas}
    return starts, min(config.sweep_start or max(starts.values()), diffusion.timesteps - 1)


def work(config: DenoiseConfig, diffusion: DiffusionConfig, shape: tuple[int, int, int]) -> Work:
    """The denoising task: every test image through every reverse step of each protocol and sigma
    (a network call each), and the metrics after every step, counted as much again."""
    starts, sweep = start_steps(config, diffusion)
    steps = {"matched": sum(t + 1 for t in starts.values()), "sweep": len(starts) * (sweep + 1)}
    calls = sum(steps[p] for p in config.protocols)
    return Work(forward_values=float(2 * config.num_images * calls * image_values(shape)))
