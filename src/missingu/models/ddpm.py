"""The DDPM U-Net of Ho et al. 2020 (the CIFAR-10 network of the DDSM code), slimmable.

Layout (``ch`` base width, ``ch_mult`` per level, ``num_res_blocks`` per level): a 3x3 stem; per
level ``num_res_blocks`` ResNet blocks (GroupNorm, swish, 3x3 conv, plus a projection of the time
embedding; GroupNorm, swish, dropout, 3x3 conv; 1x1 shortcut when widths differ), each followed by
single-head self-attention at the levels ``attention`` names, then a stride-2 3x3 conv; a
block-attention-block middle; the decoder has ``num_res_blocks + 1`` blocks per level, each fed
the concatenation of the previous output and one encoder activation, and nearest x2 upsampling
with a 3x3 conv; GroupNorm, swish and a 3x3 conv to the image channels. The time embedding is
the sinusoid of width ``ch`` -> Linear(4 ch) -> swish -> Linear(4 ch).

**Slimmable** (DDSM, Yang et al. 2024; Yu et al. 2019): every layer holds the weights of the full
network, and at width ``w`` (one of ``widths``) uses the first ``w`` fraction of each layer's
output channels and the matching input channels (per part of a concatenation), so the networks
of all widths share weights. GroupNorm keeps its channels per group (its groups scale with the
width). The image channels, the sinusoid and the attention's single head are not slimmed. Set
the width with ``model.width = w`` (or :func:`at_width`); at width 1.0 every layer computes
exactly what the plain layer does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, choose, positive
from .layers import SinusoidalEmbedding

_ATTENTION = {"none": None, "full": "full"}


@dataclass(frozen=True)
class DDPMUNetConfig:
    """Shape of the DDPM U-Net; ``attention`` has one entry (``none``/``full``) per level and
    ``widths`` lists the slimmable widths, the first 1.0 (``[1.0]``: a plain network)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention: tuple[str, ...] = ("none", "full", "none", "none")
    dropout: float = 0.1
    groups: int = 32
    widths: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)

    def __post_init__(self) -> None:
        positive(self.ch, "ch")
        positive(self.num_res_blocks, "num_res_blocks")
        positive(self.groups, "groups")
        if not self.ch_mult:
            raise ConfigError("ch_mult: needs at least one level")
        for i, m in enumerate(self.ch_mult):
            positive(m, f"ch_mult[{i}]")
        if len(self.attention) != len(self.ch_mult):
            raise ConfigError(f"attention: needs one entry per level ({len(self.ch_mult)}), got {len(self.attention)}")
        for i, kind in enumerate(self.attention):
            choose(_ATTENTION, kind, "attention (DDPM U-Net)", f"attention[{i}]")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must lie in [0, 1), got {self.dropout}")
        if not self.widths or self.widths[0] != 1.0:
            raise ConfigError(f"widths: must start with 1.0 (the full network), got {list(self.widths)}")
        if any(not 0 < w <= 1 for w in self.widths) or len(set(self.widths)) != len(self.widths):
            raise ConfigError(f"widths: distinct fractions in (0, 1], got {list(self.widths)}")
        for width in {self.ch * m for m in (1, *self.ch_mult)}:
            if width % self.groups:
                raise ConfigError(f"groups: {self.groups} does not divide channel width {width}")
            per_group = width // self.groups
            for w in self.widths:
                active = width * w
                if active != int(active) or int(active) % per_group:
                    raise ConfigError(
                        f"widths: {w} of {width} channels is {active}, not a whole number of GroupNorm groups of "
                        f"{per_group} channels; use widths that give multiples of {per_group}"
                    )

    @property
    def downsamplings(self) -> int:
        return len(self.ch_mult) - 1


class Width:
    """The width every slimmable layer of one network reads (shared, mutable)."""

    def __init__(self) -> None:
        self.value = 1.0


def _active(channels: int, width: float) -> int:
    return int(channels * width)


class SlimConv2d(nn.Conv2d):
    """A conv that at width ``w`` uses its first ``w`` fraction of output channels and, of each
    part ``in_parts`` of its (concatenated) input, the first ``w`` fraction."""

    def __init__(self, in_parts: Sequence[int], out_channels: int, kernel_size: int, state: Width, *,
                 stride: int = 1, padding: int = 0, slim_in: bool = True, slim_out: bool = True):
        super().__init__(sum(in_parts), out_channels, kernel_size, stride=stride, padding=padding)
        self.in_parts, self.state, self.slim_in, self.slim_out = tuple(in_parts), state, slim_in, slim_out

    def forward(self, x: Tensor) -> Tensor:
        w = self.state.value
        if w == 1.0:
            return super().forward(x)
        out = _active(self.out_channels, w) if self.slim_out else self.out_channels
        weight = self.weight[:out]
        if self.slim_in:
            starts = [sum(self.in_parts[:i]) for i in range(len(self.in_parts))]
            weight = torch.cat([weight[:, s:s + _active(n, w)] for s, n in zip(starts, self.in_parts)], dim=1)
        return F.conv2d(x, weight, self.bias[:out], self.stride, self.padding)


class SlimLinear(nn.Linear):
    """A linear layer slimmed like :class:`SlimConv2d` (one input part)."""

    def __init__(self, in_features: int, out_features: int, state: Width, *, slim_in: bool = True):
        super().__init__(in_features, out_features)
        self.state, self.slim_in = state, slim_in

    def forward(self, x: Tensor) -> Tensor:
        w = self.state.value
        if w == 1.0:
            return super().forward(x)
        out = _active(self.out_features, w)
        inp = _active(self.in_features, w) if self.slim_in else self.in_features
        return F.linear(x, self.weight[:out, :inp], self.bias[:out])


class SlimGroupNorm(nn.GroupNorm):
    """GroupNorm over the active channels of each part, with the full network's channels per group."""

    def __init__(self, groups: int, parts: Sequence[int], state: Width):
        super().__init__(groups, sum(parts))
        self.parts, self.state = tuple(parts), state

    def forward(self, x: Tensor) -> Tensor:
        w = self.state.value
        if w == 1.0:
            return super().forward(x)
        starts = [sum(self.parts[:i]) for i in range(len(self.parts))]
        index = [slice(s, s + _active(n, w)) for s, n in zip(starts, self.parts)]
        weight = torch.cat([self.weight[i] for i in index])
        bias = torch.cat([self.bias[i] for i in index])
        per_group = self.num_channels // self.num_groups
        return F.group_norm(x, weight.numel() // per_group, weight, bias, self.eps)


class ResnetBlock(nn.Module):
    """``h = conv2(drop(swish(N(conv1(swish(N(x))) + W t)))); out = h + shortcut(x)``."""

    def __init__(self, in_parts: Sequence[int], out: int, temb: int, groups: int, dropout: float, state: Width):
        super().__init__()
        self.norm1 = SlimGroupNorm(groups, in_parts, state)
        self.conv1 = SlimConv2d(in_parts, out, 3, state, padding=1)
        self.temb_proj = SlimLinear(temb, out, state)
        self.norm2 = SlimGroupNorm(groups, [out], state)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SlimConv2d([out], out, 3, state, padding=1)
        self.shortcut = SlimConv2d(in_parts, out, 1, state) if sum(in_parts) != out else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (x if self.shortcut is None else self.shortcut(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels: ``x + proj(softmax(q^T k / sqrt(C)) v)``."""

    def __init__(self, channels: int, groups: int, state: Width):
        super().__init__()
        self.norm = SlimGroupNorm(groups, [channels], state)
        self.q, self.k, self.v, self.proj_out = (SlimConv2d([channels], channels, 1, state) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        z = self.norm(x)
        q = self.q(z).reshape(b, c, h * w).transpose(1, 2)
        k = self.k(z).reshape(b, c, h * w)
        v = self.v(z).reshape(b, c, h * w).transpose(1, 2)
        attn = (q @ k * c**-0.5).softmax(dim=-1)
        return x + self.proj_out((attn @ v).transpose(1, 2).reshape(b, c, h, w))


class DDPMUNet(nn.Module):
    """DDPM U-Net denoiser ``f(x_t, t) -> eps`` (or ``v``) at the current ``width``."""

    nfe_per_call = 1

    def __init__(self, config: DDPMUNetConfig, channels: int = 3):
        super().__init__()
        self.config, self.channels = config, channels
        c = config
        state = self.state = Width()
        temb = 4 * c.ch
        self.temb = nn.ModuleDict({
            "embed": SinusoidalEmbedding(c.ch),
            "dense0": SlimLinear(c.ch, temb, state, slim_in=False),
            "dense1": SlimLinear(temb, temb, state),
        })
        self.conv_in = SlimConv2d([channels], c.ch, 3, state, padding=1, slim_in=False)
        widths = [c.ch * m for m in c.ch_mult]
        skips = [c.ch]
        block_in = c.ch
        self.down = nn.ModuleList()
        for level, (width, attn) in enumerate(zip(widths, c.attention)):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.blocks.append(ResnetBlock([block_in], width, temb, c.groups, c.dropout, state))
                stage.attn.append(AttnBlock(width, c.groups, state) if attn == "full" else nn.Identity())
                block_in = width
                skips.append(width)
            stage.downsample = None
            if level != len(widths) - 1:
                stage.downsample = SlimConv2d([width], width, 3, state, stride=2, padding=1)
                skips.append(width)
            self.down.append(stage)
        self.mid_block1 = ResnetBlock([block_in], block_in, temb, c.groups, c.dropout, state)
        self.mid_attn = AttnBlock(block_in, c.groups, state)
        self.mid_block2 = ResnetBlock([block_in], block_in, temb, c.groups, c.dropout, state)
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width, attn = widths[level], c.attention[level]
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                stage.blocks.append(ResnetBlock([block_in, skips.pop()], width, temb, c.groups, c.dropout, state))
                stage.attn.append(AttnBlock(width, c.groups, state) if attn == "full" else nn.Identity())
                block_in = width
            stage.upsample = SlimConv2d([width], width, 3, state, padding=1) if level != 0 else None
            self.up.append(stage)
        self.norm_out = SlimGroupNorm(c.groups, [block_in], state)
        self.conv_out = SlimConv2d([block_in], channels, 3, state, padding=1, slim_out=False)

    @property
    def width(self) -> float:
        return self.state.value

    @width.setter
    def width(self, value: float) -> None:
        if value not in self.config.widths:
            raise ConfigError(f"width: {value} is not one of this network's widths; allowed: "
                              f"{', '.join(map(str, self.config.widths))}")
        self.state.value = float(value)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.temb["embed"](t)
        temb = self.temb["dense1"](F.silu(self.temb["dense0"](temb)))
        hs = [self.conv_in(x)]
        for stage in self.down:
            for block, attn in zip(stage.blocks, stage.attn):
                hs.append(attn(block(hs[-1], temb)))
            if stage.downsample is not None:
                hs.append(stage.downsample(hs[-1]))
        h = self.mid_block2(self.mid_attn(self.mid_block1(hs[-1], temb)), temb)
        for stage in self.up:
            for block, attn in zip(stage.blocks, stage.attn):
                h = attn(block(torch.cat((h, hs.pop()), dim=1), temb))
            if stage.upsample is not None:
                h = stage.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


@contextlib.contextmanager
def at_width(model: nn.Module, width: float) -> Iterator[nn.Module]:
    """``model`` at ``width`` inside the block, back at its previous width afterwards."""
    before = model.width
    model.width = width
    try:
        yield model
    finally:
        model.width = before


def is_slimmable(model: nn.Module) -> bool:
    """Whether ``model`` has several widths to choose from."""
    return isinstance(model, DDPMUNet) and len(model.config.widths) > 1


__all__ = ["DDPMUNet", "DDPMUNetConfig", "at_width", "is_slimmable"]
