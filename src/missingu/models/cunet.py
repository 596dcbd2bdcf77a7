"""The continuous U-Net (cU-Net, Calvo-Ordonez et al. 2023): a U-Net whose blocks are ODE blocks.

Layout (widths ``c_0 .. c_L``, ``c_L`` the bottleneck)::

    stem:    "initial velocity": conv3x3 (C -> c_0/2) -> softplus -> conv1x1 (-> c_0) -> softplus
             (the draft code had GroupNorms here too; see the comment in CUNet.__init__)
    encoder: ODEBlock(c_i) [+ attention] -> skip; conv1x1 (c_i -> c_{i+1}) -> bilinear /2
    middle:  ODEBlock(c_L) [+ attention]
    decoder: bilinear x2 -> conv1x1 (c_{i+1} -> c_i) -> concat skip -> conv1x1 (2c_i -> c_i)
             -> ODEBlock(c_i) [+ attention]
    head:    conv1x1 (c_0 -> C)

The diffusion step enters each ODE function through a FiLM scale/shift of a sinusoidal
embedding (``time_conditioning``). Preset ``paper`` has the widths of the authors' draft
(32, 64, 128, 256, 512) and softmax attention (4 heads x 32) at the 8x8 level for 64x64 input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, choose, positive
from .layers import ATTENTION, attention_layer, time_mlp
from .ode_block import DYNAMICS, ODEBlock, SolverConfig


@dataclass(frozen=True)
class CUNetConfig:
    """Shape and solver of the cU-Net. ``channels`` lists the state width per level (the last is
    the bottleneck); ``attention`` has one entry (``none``/``linear``/``full``) per level."""

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    attention: tuple[str, ...] = ("none", "none", "none", "full", "none")
    attn_heads: int = 4
    attn_dim_head: int = 32
    dynamics: Literal["second_order", "augmented_first_order"] = "second_order"
    time_conditioning: bool = True
    solver: str = "rk4"
    solver_steps: int = 1
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = False
    groups: int = 8

    def __post_init__(self) -> None:
        if len(self.channels) < 2:
            raise ConfigError("channels: needs at least two levels (one encoder level and the bottleneck)")
        for i, c in enumerate(self.channels):
            positive(c, f"channels[{i}]")
            if c % self.groups or (self.dynamics == "second_order" and c % 2):
                raise ConfigError(
                    f"channels[{i}]: {c} must be divisible by groups ({self.groups})"
                    + (" and even (second_order dynamics)" if self.dynamics == "second_order" else "")
                )
        if self.channels[0] % 2:
            raise ConfigError(f"channels[0]: the stem halves {self.channels[0]}; it must be even")
        if len(self.attention) != len(self.channels):
            raise ConfigError(
                f"attention: needs one entry per level ({len(self.channels)}), got {len(self.attention)}"
            )
        for i, kind in enumerate(self.attention):
            choose(ATTENTION, kind, "attention", f"attention[{i}]")
        if self.dynamics not in DYNAMICS:
            raise ConfigError(f"dynamics: unknown {self.dynamics!r}; allowed: {', '.join(DYNAMICS)}")
        positive(self.attn_heads, "attn_heads")
        positive(self.attn_dim_head, "attn_dim_head")
        _ = self.solver_config  # validates solver, solver_steps, rtol, atol

    @property
    def solver_config(self) -> SolverConfig:
        return SolverConfig(self.solver, self.solver_steps, self.rtol, self.atol, self.adjoint)

    @property
    def downsamplings(self) -> int:
        return len(self.channels) - 1


class _Level(nn.Module):
    """An ODE block followed by optional residual attention."""

    def __init__(self, width: int, attention: str, time_dim: int | None, c: CUNetConfig):
        super().__init__()
        self.ode = ODEBlock(
            width, time_dim=time_dim, dynamics=c.dynamics, solver=c.solver_config, groups=c.groups
        )
        self.attn = attention_layer(attention, width, c.attn_heads, c.attn_dim_head)

    def forward(self, z: Tensor, t_emb: Tensor | None) -> Tensor:
        z = self.ode(z, t_emb)
        return z if self.attn is None else z + self.attn(z)


class CUNet(nn.Module):
    """Continuous U-Net denoiser ``f(x_t, t) -> eps`` (or ``v``); ``nfe`` is the number of
    ODE-function evaluations (all blocks) in the last forward."""

    def __init__(self, config: CUNetConfig, channels: int = 3):
        super().__init__()
        self.config = config
        self.channels = channels
        c = config
        widths = c.channels
        c0 = widths[0]
        time_dim = 4 * c0 if c.time_conditioning else None
        self.time_mlp = time_mlp(c0, time_dim) if time_dim else None
        # The draft's stem had a GroupNorm before each conv. The stem is the only path from the
        # input to the output, and per-image normalisation there discards the mean and scale of
        # the noisy input that the noise prediction needs: trained on digits, that cU-Net had
        # 10x the U-Net's loss at high noise and sampled wrong brightness. So no norms here.
        self.stem = nn.Sequential(
            nn.Conv2d(channels, c0 // 2, 3, padding=1),
            nn.Softplus(),
            nn.Conv2d(c0 // 2, c0, 1),
            nn.Softplus(),
        )
        self.encoder = nn.ModuleList(
            _Level(w, a, time_dim, c) for w, a in zip(widths[:-1], c.attention[:-1])
        )
        self.down = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(widths[:-1], widths[1:]))
        self.middle = _Level(widths[-1], c.attention[-1], time_dim, c)
        self.up = nn.ModuleList(nn.Conv2d(b, a, 1) for a, b in zip(widths[:-1], widths[1:]))
        self.merge = nn.ModuleList(nn.Conv2d(2 * w, w, 1) for w in widths[:-1])
        self.decoder = nn.ModuleList(
            _Level(w, a, time_dim, c) for w, a in zip(widths[:-1], c.attention[:-1])
        )
        self.head = nn.Conv2d(c0, channels, 1)

    @property
    def nfe(self) -> int:
        return sum(m.nfe for m in self.modules() if isinstance(m, ODEBlock))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t_emb = self.time_mlp(t) if self.time_mlp is not None else None
        z = self.stem(x)
        skips = []
        for level, down in zip(self.encoder, self.down):
            z = level(z, t_emb)
            skips.append(z)
            z = F.interpolate(down(z), scale_factor=0.5, mode="bilinear", align_corners=False)
        z = self.middle(z, t_emb)
        for i in reversed(range(len(self.decoder))):
            z = self.up[i](F.interpolate(z, scale_factor=2.0, mode="bilinear", align_corners=False))
            z = self.merge[i](torch.cat((z, skips.pop()), dim=1))
            z = self.decoder[i](z, t_emb)
        return self.head(z)
