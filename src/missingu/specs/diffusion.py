"""The noise schedule of a DDPM (Ho et al. 2020) as a config and as numbers.

``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` for ``t = 0 .. T-1``; the schedules are computed
here in float64 with numpy (:class:`missingu.diffusion.Diffusion` turns them into tensors), so a
config can be checked and a job's work counted without torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config import ConfigError, choose, in_range, positive


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule, rescaled by ``1000 / T`` so any T spans the same noise range."""
    scale = 1000.0 / timesteps
    return np.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021: ``alpha_bar(t) ~ cos^2((t/T + s) / (1 + s) * pi/2)``, beta <= 0.999."""
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)


def sigmoid_betas(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Jabri et al. 2022: ``alpha_bar(t) ~ -sigmoid((t/T (end-start) + start) / tau)``, rescaled to [0, 1]."""
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    v_start, v_end = _sigmoid(start / tau), _sigmoid(end / tau)
    f = (-_sigmoid((steps * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    alpha_bar = f / f[0]
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 1e-5, 0.999)


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}
OBJECTIVES = ("eps", "v")


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and training target. ``beta_start``/``beta_end`` apply to ``linear`` only."""

    schedule: str = "linear"
    timesteps: int = 1000
    objective: Literal["eps", "v"] = "eps"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        choose(SCHEDULES, self.schedule, "noise schedule", "schedule")
        positive(self.timesteps, "timesteps")
        if self.timesteps < 2:
            raise ConfigError(f"timesteps: must be at least 2, got {self.timesteps}")
        positive(self.beta_start, "beta_start")
        in_range(self.beta_end, self.beta_start, 1.0, "beta_end")
        if self.schedule == "linear" and 1000.0 / self.timesteps * self.beta_end >= 1:
            raise ConfigError(
                f"timesteps: {self.timesteps} steps with beta_end {self.beta_end} give a "
                f"rescaled beta >= 1; use more timesteps or a smaller beta_end"
            )


def betas(config: DiffusionConfig) -> np.ndarray:
    """``beta_t`` of ``config``'s schedule, float64 (``beta_start``/``beta_end`` for ``linear``)."""
    fn = SCHEDULES[config.schedule]
    if config.schedule == "linear":
        return fn(config.timesteps, config.beta_start, config.beta_end)
    return fn(config.timesteps)
