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
output channels and the matching input channels (:mod:`.slim`), so the networks of all widths
share weights. The image channels, the sinusoid and the attention's single head are not slimmed.
Set the width with ``model.width = w`` (or :func:`at_width`); at width 1.0 every layer computes
exactly what the plain layer does.

Three options follow the official DDSM network (EnVision-Research/DDSM ``slimmable_model.py`` and
``slimmable_ops.py``) by default, each with this package's earlier choice as an ablation:

- ``init``: ``ddsm`` draws every conv and linear weight Xavier-uniform
  (``U(-b, b)``, ``b = g sqrt(6 / (fan_in + fan_out))``, ``g = 1``) with zero biases, and
  ``g = 1e-5`` for each residual block's output conv (``conv2``) and the final conv
  (``conv_out``), so every residual branch and the output start near zero. The official
  ``AttnBlock`` also sets ``g = 1e-5`` on its output projection, but the enclosing ``ResBlock``
  re-initialises every conv inside it (the attention included) with ``g = 1`` afterwards, so the
  official network runs with ``g = 1`` there, and so does ``ddsm`` here. ``torch``: PyTorch's
  default initialisation (Kaiming-uniform with ``a = sqrt(5)``, uniform biases).
- ``norm_groups``: ``fixed`` keeps ``groups`` GroupNorm groups at every width (DDSM); ``scaled``
  keeps the full width's channels per group.
- ``concat_slicing``: ``block`` uses the first ``w (a + b)`` input channels of a layer fed
  ``cat(h, skip)`` (DDSM); ``parts`` the first ``w a`` and ``w b`` of each part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..specs.models import DDPMUNetConfig
from .layers import SinusoidalEmbedding
from .slim import SlimConv2d, SlimGroupNorm, SlimLinear, Width

#: gain of the Xavier draw of the layers that end a residual branch or the network (DDSM, pytorch-ddpm)
OUTPUT_GAIN = 1e-5


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
        state = self.state = Width(fixed_groups=c.norm_groups == "fixed", block_concat=c.concat_slicing == "block")
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
        if c.init == "ddsm":
            self._init_ddsm()

    def _init_ddsm(self) -> None:
        """DDSM's (pytorch-ddpm's) initialisation as its code runs: Xavier-uniform weights and zero
        biases for every conv and linear, gain ``OUTPUT_GAIN`` on each residual block's ``conv2``
        and on ``conv_out`` (the attention's ``proj_out`` keeps gain 1, see the module docstring)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, ResnetBlock):
                nn.init.xavier_uniform_(module.conv2.weight, gain=OUTPUT_GAIN)
        nn.init.xavier_uniform_(self.conv_out.weight, gain=OUTPUT_GAIN)

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


__all__ = ["DDPMUNet", "DDPMUNetConfig", "SlimConv2d", "SlimGroupNorm", "SlimLinear", "at_width", "is_slimmable"]
