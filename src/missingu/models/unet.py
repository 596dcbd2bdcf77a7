"""The baseline DDPM U-Net (Ho et al. 2020), in the layout of denoising-diffusion-pytorch 1.8.3.

Per level: two ResNet blocks (GroupNorm, time scale/shift) and an attention layer, then a
space-to-depth downsample; a block-attention-block middle; the decoder mirrors it with
skip concatenation and nearest upsampling; a 7x7 stem and a final ResNet block over the
stem's features. Preset ``paper`` is ``Unet(dim=64, dim_mults=(1, 2, 4, 8))`` of that package.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..specs.models import UNetConfig
from .layers import attention_layer, scale_shift, time_mlp


class ConvBlock(nn.Module):
    """Conv3x3 -> GroupNorm -> optional FiLM -> SiLU."""

    def __init__(self, dim: int, dim_out: int, groups: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        x = self.norm(self.proj(x))
        if emb is not None:
            x = scale_shift(x, emb)
        return self.act(x)


class ResnetBlock(nn.Module):
    """``h = block2(block1(x, film(t))); out = h + W x`` (W a 1x1 conv when widths differ)."""

    def __init__(self, dim: int, dim_out: int, time_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.block1 = ConvBlock(dim, dim_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.block2 = ConvBlock(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        h = self.block1(x, self.mlp(t_emb))
        h = self.block2(self.dropout(h))
        return h + self.res_conv(x)


class Downsample(nn.Module):
    """Space-to-depth (2x2 pixels -> 4 channels) then a 1x1 conv: halves H and W."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.conv = nn.Conv2d(dim * 4, dim_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.unshuffle(x))


def upsample(dim: int, dim_out: int) -> nn.Sequential:
    """Nearest-neighbour x2 then a 3x3 conv."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, padding=1))


class Residual(nn.Module):
    """``x + f(x)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn(x)


class UNet(nn.Module):
    """Discrete U-Net denoiser ``f(x_t, t) -> eps`` (or ``v``)."""

    nfe_per_call = 1

    def __init__(self, config: UNetConfig, channels: int = 3):
        super().__init__()
        self.config = config
        self.channels = channels
        c = config
        dims = [c.dim, *(c.dim * m for m in c.dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = c.dim * 4
        last = len(in_out) - 1

        def block(i: int, o: int) -> ResnetBlock:
            return ResnetBlock(i, o, time_dim, c.groups, c.dropout)

        def attn(kind: str, d: int) -> nn.Module:
            layer = attention_layer(kind, d, c.attn_heads, c.attn_dim_head)
            return nn.Identity() if layer is None else Residual(layer)

        self.init_conv = nn.Conv2d(channels, c.dim, 7, padding=3)
        self.time_mlp = time_mlp(c.dim, time_dim)
        self.downs = nn.ModuleList(
            nn.ModuleList([
                block(d_in, d_in),
                block(d_in, d_in),
                attn(kind, d_in),
                Downsample(d_in, d_out) if i < last else nn.Conv2d(d_in, d_out, 3, padding=1),
            ])
            for i, ((d_in, d_out), kind) in enumerate(zip(in_out, c.attention))
        )
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_attn = attn("full", mid)
        self.mid_block2 = block(mid, mid)
        self.ups = nn.ModuleList(
            nn.ModuleList([
                block(d_out + d_in, d_out),
                block(d_out + d_in, d_out),
                attn(kind, d_out),
                upsample(d_out, d_in) if i < last else nn.Conv2d(d_out, d_in, 3, padding=1),
            ])
            for i, ((d_in, d_out), kind) in enumerate(zip(reversed(in_out), reversed(c.attention)))
        )
        self.final_block = block(c.dim * 2, c.dim)
        self.final_conv = nn.Conv2d(c.dim, channels, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        x = self.init_conv(x)
        stem = x
        emb = self.time_mlp(t)
        skips = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, emb)
            skips.append(x)
            x = attn(block2(x, emb))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, emb)), emb)
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), emb)
            x = attn(block2(torch.cat((x, skips.pop()), dim=1), emb))
            x = up(x)
        return self.final_conv(self.final_block(torch.cat((x, stem), dim=1), emb))
