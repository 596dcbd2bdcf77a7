"""Discrete-time Gaussian diffusion (DDPM, Ho et al. 2020).

Forward process, with ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` for ``t = 0 .. T-1``::

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)

The network predicts either the noise ``eps`` or the velocity
``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0`` (Salimans & Ho 2022); the
training loss is the mean squared error to that target. Schedules are computed in
float64 (:mod:`missingu.specs.diffusion`) and stored as float32 tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .specs.diffusion import OBJECTIVES, SCHEDULES, DiffusionConfig  # noqa: F401  (re-exported)
from .specs.diffusion import betas as schedule_betas

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""A network ``f(x_t, t) -> eps or v``; ``t`` holds (possibly fractional) step indices."""


class Diffusion:
    """A DDPM forward process with ``T`` steps and helpers to turn network outputs into
    ``(eps, x0)``. Step indices may be fractional: ``log alpha_bar`` is then linearly
    interpolated between neighbouring integer steps (used by the probability-flow ODE).
    """

    def __init__(self, config: DiffusionConfig = DiffusionConfig(), device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        betas = torch.from_numpy(schedule_betas(config))
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
