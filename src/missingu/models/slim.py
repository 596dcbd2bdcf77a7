"""Slimmable layers (Yu et al. 2019; DDSM, Yang et al. 2024): each holds the weights of the full
layer and at width ``w`` uses the first ``w`` fraction of its output channels and of its input.

All layers of one network read one shared :class:`Width`, which also holds two rules:

- **concatenated inputs** (the decoder's ``cat(h, skip)``, parts of ``a`` and ``b`` channels, of
  which ``w a`` and ``w b`` are active): ``block`` (DDSM) uses the first ``w (a + b)`` input
  channels of the weight (and of a GroupNorm's scale and shift) as one block; ``parts`` uses the
  first ``w a`` of the first part and the first ``w b`` of the second, so each active channel keeps
  the weights it has at full width.
- **GroupNorm groups**: ``fixed`` (DDSM) keeps the layer's ``G`` groups at every width (groups of
  ``w C / G`` channels); ``scaled`` keeps the full width's ``C / G`` channels per group
  (``w G`` groups).

At width 1.0 every layer computes exactly what the plain torch layer does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Width:
    """The width every slimmable layer of one network reads (shared, mutable), and the
    network's rules for GroupNorm groups and concatenated inputs (see the module docstring)."""

    def __init__(self, *, fixed_groups: bool, block_concat: bool) -> None:
        self.value = 1.0
        self.fixed_groups, self.block_concat = fixed_groups, block_concat


def _active(channels: int, width: float) -> int:
    return int(channels * width)


def _active_slice(parts: Sequence[int], width: float, block: bool) -> list[slice]:
    """Index ranges of the active channels of a concatenation of ``parts`` at ``width``: one
    block of the first ``sum(w n)``, or the first ``w n`` of each part."""
    if block:
        return [slice(0, sum(_active(n, width) for n in parts))]
    starts = [sum(parts[:i]) for i in range(len(parts))]
    return [slice(s, s + _active(n, width)) for s, n in zip(starts, parts)]


class SlimConv2d(nn.Conv2d):
    """A conv that at width ``w`` uses its first ``w`` fraction of output channels and the active
    input channels of its (concatenated) input parts ``in_parts``."""

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
            index = _active_slice(self.in_parts, w, self.state.block_concat)
            weight = torch.cat([weight[:, i] for i in index], dim=1) if len(index) > 1 else weight[:, index[0]]
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
    """GroupNorm over the active channels of its input ``parts``: ``groups`` groups at every width
    (``fixed``) or the full width's channels per group (``scaled``)."""

    def __init__(self, groups: int, parts: Sequence[int], state: Width):
        super().__init__(groups, sum(parts))
        self.parts, self.state = tuple(parts), state

    def forward(self, x: Tensor) -> Tensor:
        w = self.state.value
        if w == 1.0:
            return super().forward(x)
        index = _active_slice(self.parts, w, self.state.block_concat)
        weight = torch.cat([self.weight[i] for i in index])
        bias = torch.cat([self.bias[i] for i in index])
        if self.state.fixed_groups:
            groups = self.num_groups
        else:
            groups = weight.numel() // (self.num_channels // self.num_groups)
        return F.group_norm(x, groups, weight, bias, self.eps)


__all__ = ["SlimConv2d", "SlimGroupNorm", "SlimLinear", "Width"]
