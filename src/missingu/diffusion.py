"""Discrete-time Gaussian diffusion (DDPM, Ho et al. 2020).

Forward process, with ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` for ``t = 0 .. T-1``::

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)

The network predicts either the noise ``eps`` or the velocity
``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0`` (Salimans & Ho 2022); the
training loss is the mean squared error to that target. Schedules are computed in
float64 and stored as float32 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .config import ConfigError, choose, in_range, positive

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""A network ``f(x_t, t) -> eps or v``; ``t`` holds (possibly fractional) step indices."""


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear schedule, rescaled by ``1000 / T`` so any T spans the same noise range."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021: ``alpha_bar(t) ~ cos^2((t/T + s) / (1 + s) * pi/2)``, beta <= 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0, 0.999)


def sigmoid_betas(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Tensor:
    """Jabri et al. 2022: ``alpha_bar(t) ~ -sigmoid((t/T (end-start) + start) / tau)``, rescaled to [0, 1]."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    f = (-torch.sigmoid((steps * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(1e-5, 0.999)


SCHEDULES: dict[str, Callable[..., Tensor]] = {
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


class Diffusion:
    """A DDPM forward process with ``T`` steps and helpers to turn network outputs into
    ``(eps, x0)``. Step indices may be fractional: ``log alpha_bar`` is then linearly
    interpolated between neighbouring integer steps (used by the probability-flow ODE).
    """

    def __init__(self, config: DiffusionConfig = DiffusionConfig(), device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        fn = SCHEDULES[config.schedule]
        if config.schedule == "linear":
            betas = fn(config.timesteps, config.beta_start, config.beta_end)
        else:
            betas = fn(config.timesteps)
        alpha_bar = torch.cumprod(1 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        self.betas64 = betas
        self.log_alpha_bar64 = alpha_bar.log()
        f32 = {"dtype": torch.float32, "device": self.device}
        self.betas = betas.to(**f32)
        self.alpha_bar = alpha_bar.to(**f32)
        self.alpha_bar_prev = alpha_bar_prev.to(**f32)
        # q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, var), Ho et al. 2020 Eq. 7
        self.posterior_var = (betas * (1 - alpha_bar_prev) / (1 - alpha_bar)).to(**f32)
        self.posterior_c0 = (betas * alpha_bar_prev.sqrt() / (1 - alpha_bar)).to(**f32)
        self.posterior_ct = ((1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar)).to(**f32)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    def to(self, device: torch.device | str) -> Diffusion:
        """The same process with its tensors on ``device``."""
        return self if torch.device(device) == self.device else Diffusion(self.config, device)

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """``alpha_bar`` at (fractional) step indices ``t`` in ``[0, T-1]``, as float32."""
        if not torch.is_floating_point(t):
            return self.alpha_bar.to(t.device)[t]
        log_ab = self.log_alpha_bar64.to(t.device)
        tt = t.to(torch.float64).clamp(0, self.timesteps - 1)
        lo = tt.floor().long().clamp(max=self.timesteps - 2)
        frac = tt - lo
        return ((1 - frac) * log_ab[lo] + frac * log_ab[lo + 1]).exp().float()

    @staticmethod
    def _bcast(coef: Tensor, x: Tensor) -> Tensor:
        return coef.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``."""
        ab = self._bcast(self.alpha_bar_at(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The regression target of the configured objective (``eps`` or ``v``)."""
        if self.config.objective == "eps":
            return noise
        ab = self._bcast(self.alpha_bar_at(t), x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def eps_x0(self, output: Tensor, x_t: Tensor, t: Tensor, clip: bool = False) -> tuple[Tensor, Tensor]:
        """Turn a network output into ``(eps, x0)`` predictions.

        eps-objective: ``x0 = (x_t - sqrt(1-ab) eps) / sqrt(ab)``.
        v-objective: ``x0 = sqrt(ab) x_t - sqrt(1-ab) v``, ``eps = sqrt(1-ab) x_t + sqrt(ab) v``.
        With ``clip`` the ``x0`` prediction is clamped to [-1, 1] and ``eps`` recomputed from it.
        """
        ab = self._bcast(self.alpha_bar_at(t), x_t)
        if self.config.objective == "eps":
            eps = output
            x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        else:
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * output
            eps = (1 - ab).sqrt() * x_t + ab.sqrt() * output
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return eps, x0

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Uniform integer steps in ``[0, T)`` (on the CPU, for reproducibility)."""
        return torch.randint(0, self.timesteps, (batch,), generator=generator)

    def loss(
        self,
        model: Denoiser,
        x0: Tensor,
        t: Tensor,
        noise: Tensor,
    ) -> Tensor:
        """``E || f(x_t, t) - target ||^2`` averaged over the batch and pixels (Ho et al. 2020 Eq. 14)."""
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, t)
        return torch.mean((out.float() - self.target(x0, noise, t)) ** 2)
