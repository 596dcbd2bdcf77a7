"""The training recipe of a config (:mod:`missingu.train` runs it) and the work of a training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, choose, in_range, positive
from ..task import Work, image_values

SANDWICH_NOISE = ("shared", "per_width")


class TrainingDiverged(FloatingPointError):
    """A loss or the gradient became NaN or infinite; the message names the step, the width,
    which of the two, and the last checkpoint (raised by :mod:`missingu.divergence`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``grad_clip: null`` disables clipping; ``amp`` applies on CUDA only.
    ``gpus`` > 1 trains data-parallel in that many processes (``torchrun``; on the CPU, gloo
    processes), each on its slice of the global ``batch_size``. ``warmup_steps`` W ramps the
    learning rate linearly (:func:`learning_rate`). A model entry's ``train`` keys override these
    for that model (``ExperimentConfig.train_for``). A slimmable network's passes share one batch
    ``x0``; ``sandwich_noise: shared`` gives them one ``(t, noise)`` too, ``per_width`` fresh ones for
    each narrower pass (as DDSM's ``main.py``, whose trainer draws ``t`` and noise at each call).
    (Horizontal flips are a property of the dataset: ``datasets[].hflip``.)"""

    steps: int = 4000
    batch_size: int = 64
    gpus: int = 1
    lr: float = 2e-4
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    amp: bool = True
    checkpoint_every: int = 500
    log_every: int = 25
    sandwich_noise: str = "shared"

    def __post_init__(self) -> None:
        choose(dict.fromkeys(SANDWICH_NOISE), self.sandwich_noise, "sandwich noise", "sandwich_noise")
        for key in ("steps", "batch_size", "gpus", "lr", "checkpoint_every", "log_every"):
            positive(getattr(self, key), key)
        if self.batch_size % self.gpus:
            raise ConfigError(f"batch_size: {self.batch_size} does not split evenly over gpus ({self.gpus})")
        for i, b in enumerate(self.betas):
            in_range(b, 0.0, 0.999999, f"betas[{i}]")
        in_range(self.ema_decay, 0.0, 1.0, "ema_decay")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps: must be zero (no warm-up) or positive, got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: must be zero or positive, got {self.weight_decay}")
        if self.grad_clip is not None:
            positive(self.grad_clip, "grad_clip")


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (from 0): ``lr * min(step, W) / W``, ``W =
    warmup_steps`` (DDSM's LambdaLR: step 0 moves no weight); ``lr`` when ``W = 0``."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(step, config.warmup_steps) / config.warmup_steps


def work(config: TrainConfig, shape: tuple[int, int, int], model_config: Any = None) -> Work:
    """``steps x batch_size`` images through a training step; for a slimmable ``model_config``
    through each sandwich pass, one at width ``w`` costing ``w**2`` (the middle width averaged)."""
    widths = sorted(getattr(model_config, "widths", ()) or (), reverse=True)
    passes = 1.0
    if len(widths) >= 2:
        middle = widths[1:-1]
        passes = widths[0] ** 2 + widths[-1] ** 2 + (sum(w**2 for w in middle) / len(middle) if middle else 0.0)
    return Work(train_values=float(config.steps * config.batch_size * image_values(shape) * passes))
