"""The continuous U-Net (cU-Net, Calvo-Ordonez et al. 2023): a U-Net whose blocks are ODE blocks.

Layout (widths ``c_0 .. c_L``, ``c_L`` the bottleneck)::

    stem:    "initial velocity": [IN] conv3x3 (C -> c_0/2) -> softplus -> [IN] conv1x1 (-> c_0)
             -> softplus   ([IN]: the draft's InstanceNorms, with ``stem_norm``)
    encoder: ODEBlock(c_i) [+ attention] -> skip; conv1x1 (c_i -> c_{i+1}) [-> softplus] -> bilinear /2
    middle:  ODEBlock(c_L) [+ attention]
    decoder: bilinear x2 -> conv1x1 (c_{i+1} -> c_i) -> concat skip -> conv1x1 (2c_i -> c_i)
             (``skip_merge: project``; the draft's ``concat``: concat skip -> conv1x1
             (c_{i+1} + c_i -> c_i)) [-> softplus] -> ODEBlock(c_i) [+ attention]
    head:    conv1x1 (c_0 -> C)

The diffusion step enters each ODE function through a FiLM scale/shift of a step embedding
(``time_conditioning``): a sinusoid -> MLP (``time_embedding: mlp``) or the draft's frozen
sinusoid table (``table``). Preset ``paper`` has the widths of the authors' draft (32, 64, 128,
256, 512) and softmax attention (4 heads x 32) at the 8x8 level for 64x64 input, with this
package's choices elsewhere; preset ``draft`` is the draft network itself (8,811,875 parameters
at 64x64x3, tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..specs.models import CUNetConfig
from .layers import StepTable, attention_layer, time_mlp
from .ode_block import ODEBlock


class _Level(nn.Module):
    """An ODE block followed by optional attention, added to the features (residual) or, as in
    the draft, replacing them."""

    def __init__(self, width: int, attention: str, time_dim: int | None, c: CUNetConfig):
        super().__init__()
        self.ode = ODEBlock(
            width, time_dim=time_dim, dynamics=c.dynamics, solver=c.solver_config, groups=c.groups,
            norm=c.norm, func_output=c.func_output,
        )
        self.attn = attention_layer(attention, width, c.attn_heads, c.attn_dim_head)
        self.residual = c.attention_residual

    def forward(self, z: Tensor, t_emb: Tensor | None) -> Tensor:
        z = self.ode(z, t_emb)
        if self.attn is None:
            return z
        return z + self.attn(z) if self.residual else self.attn(z)


def _pointwise(dim_in: int, dim_out: int, act: bool) -> nn.Module:
    """A 1x1 convolution between levels, followed by softplus when ``act`` (the draft's)."""
    conv = nn.Conv2d(dim_in, dim_out, 1)
    return nn.Sequential(conv, nn.Softplus()) if act else conv


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
        # the draft's table (1000 x 16 num_filters) is built even when nothing reads it, as there
        table = c.time_embedding == "table"
        time_dim = 8 * c0 if table else 4 * c0
        self.time_table = StepTable(time_dim) if table else None
        self.time_mlp = time_mlp(c0, time_dim) if c.time_conditioning and not table else None
        film_dim = time_dim if c.time_conditioning else None
        # Without stem_norm the stem has no norms: the stem is the only path from the input to the
        # output, and per-image normalisation there discards the mean and scale of the noisy input
        # that the noise prediction needs (trained on digits, the cU-Net with GroupNorms there had
        # 10x the U-Net's loss at high noise and sampled the wrong brightness).
        norm = (lambda n: [nn.InstanceNorm2d(n, affine=False)]) if c.stem_norm else (lambda n: [])
        self.stem = nn.Sequential(
            *norm(channels), nn.Conv2d(channels, c0 // 2, 3, padding=1), nn.Softplus(),
            *norm(c0 // 2), nn.Conv2d(c0 // 2, c0, 1), nn.Softplus(),
        )
        self.encoder = nn.ModuleList(
            _Level(w, a, film_dim, c) for w, a in zip(widths[:-1], c.attention[:-1])
        )
        self.down = nn.ModuleList(_pointwise(a, b, c.transition_act) for a, b in zip(widths[:-1], widths[1:]))
        self.middle = _Level(widths[-1], c.attention[-1], film_dim, c)
        project = c.skip_merge == "project"
        self.up = nn.ModuleList(
            nn.Conv2d(b, a, 1) if project else nn.Identity() for a, b in zip(widths[:-1], widths[1:])
        )
        self.merge = nn.ModuleList(
            _pointwise(2 * a if project else a + b, a, c.transition_act) for a, b in zip(widths[:-1], widths[1:])
        )
        self.decoder = nn.ModuleList(
            _Level(w, a, film_dim, c) for w, a in zip(widths[:-1], c.attention[:-1])
        )
        self.head = nn.Conv2d(c0, channels, 1)

    @property
    def nfe(self) -> int:
        return sum(m.nfe for m in self.modules() if isinstance(m, ODEBlock))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t_emb = None
        if self.config.time_conditioning:
            t_emb = self.time_mlp(t) if self.time_mlp is not None else self.time_table(t)
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
