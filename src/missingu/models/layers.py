"""Building blocks shared by the U-Net and the continuous U-Net."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SinusoidalEmbedding(nn.Module):
    """Transformer position encoding of a (fractional) step ``t``:
    ``[sin(t w_k), cos(t w_k)]`` with ``w_k = 10000^(-k / (d/2 - 1))``, ``k < d/2``.
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"time embedding dim must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class StepTable(nn.Module):
    """The authors' draft step embedding: a frozen table of ``rows`` sinusoids,
    ``e(t)[2i] = sin(t w_i)``, ``e(t)[2i+1] = cos(t w_i)``, ``w_i = 10000^(-4i/d)``.

    As in the draft, the table's entries are parameters that are never trained (they count in
    the parameter total, not in the trainable one). Integer steps below ``rows`` read the table;
    other steps (the probability-flow ODE's fractional ones) evaluate the same formula.
    """

    def __init__(self, dim: int, rows: int = 1000):
        super().__init__()
        if dim % 2:
            raise ValueError(f"step table dim must be even, got {dim}")
        self.dim = dim
        self.table = nn.Parameter(self.formula(torch.arange(rows), dim), requires_grad=False)

    @staticmethod
    def formula(t: Tensor, dim: int) -> Tensor:
        freqs = 10000.0 ** (-4 * torch.arange(dim // 2, dtype=torch.float64, device=t.device) / dim)
        angles = t.double()[:, None] * freqs[None, :]
        return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(len(t), dim).float()

    def forward(self, t: Tensor) -> Tensor:
        rows = self.table.shape[0]
        if bool(((t == t.round()) & (t >= 0) & (t < rows)).all()):
            return self.table[t.long()]
        return self.formula(t, self.dim).to(self.table)


NORMS = ("group", "instance")


def norm_layer(kind: str, channels: int, groups: int) -> nn.Module:
    """``group``: GroupNorm(groups) with a learned scale and shift; ``instance``: the draft's
    InstanceNorm2d, per channel and without affine parameters."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.GroupNorm(groups, channels)


def time_mlp(dim: int, time_dim: int) -> nn.Sequential:
    """Step -> sinusoidal(dim) -> Linear -> GELU -> Linear, giving a ``time_dim`` embedding."""
    return nn.Sequential(
        SinusoidalEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
    )


class ChannelRMSNorm(nn.Module):
    """``x / ||x||_channels * sqrt(C) * g``: RMS normalisation over channels with a learned gain."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.g * (x.shape[1] ** 0.5)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, heads*d, H, W) -> (B, heads, H*W, d)."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w).transpose(-1, -2)


class SelfAttention(nn.Module):
    """Softmax multi-head self-attention over pixels, pre-normed; returns the update only.

    ``softmax(q k^T / sqrt(d)) v`` is computed with explicit matmuls, not
    ``scaled_dot_product_attention``: torch's FLOP counter sees every matmul on every
    device, while it counts nothing for the fused CPU kernel. ``sdpa = True`` (the ``speed.sdpa``
    switch) computes the same function with ``scaled_dot_product_attention`` instead.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.norm = ChannelRMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)
        self.sdpa = False

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q, k, v = (_split_heads(z, self.heads) for z in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v
        out = out.transpose(-1, -2).reshape(b, -1, h, w)
        return self.to_out(out)


class LinearAttention(nn.Module):
    """Linear attention (Shen et al. 2021): ``softmax_d(q) (softmax_n(k)^T v)``, cost linear in pixels."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = heads * dim_head
        self.norm = ChannelRMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelRMSNorm(dim))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q, k, v = (_split_heads(z, self.heads) for z in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        q = q.softmax(dim=-1) * self.scale  # over features
        k = k.softmax(dim=-2)  # over pixels
        context = k.transpose(-1, -2) @ v  # (B, heads, d, d)
        out = (q @ context).transpose(-1, -2).reshape(b, -1, h, w)
        return self.to_out(out)


ATTENTION: dict[str, type[nn.Module] | None] = {
    "none": None,
    "linear": LinearAttention,
    "full": SelfAttention,
}


def attention_layer(kind: str, dim: int, heads: int, dim_head: int) -> nn.Module | None:
    """Build attention by name (``none``, ``linear``, ``full``); ``None`` for ``none``."""
    cls = ATTENTION[kind]
    return None if cls is None else cls(dim, heads=heads, dim_head=dim_head)


def scale_shift(x: Tensor, emb: Tensor) -> Tensor:
    """FiLM conditioning: ``x * (1 + scale) + shift`` with ``(scale, shift) = emb.chunk(2)``."""
    scale, shift = emb[:, :, None, None].chunk(2, dim=1)
    return x * (scale + 1) + shift
