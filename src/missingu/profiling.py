"""Measured model cost: parameter counts and FLOPs of one denoiser call.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and
convolutions (2 FLOPs per multiply-accumulate) and follows every ODE-function
evaluation inside torchdiffeq; MACs = FLOPs / 2. Element-wise ops and norms are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """``sum(p.numel())`` over (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass
class CallCost:
    """FLOPs of one forward call at a given input shape, and the ODE-function evaluations it
    made (``None`` for networks without ODE blocks)."""

    flops: int
    nfe: int | None

    @property
    def macs(self) -> float:
        return self.flops / 2


@torch.no_grad()
def measure_call(model: nn.Module, shape: Sequence[int], batch: int = 1, t: float = 500.0) -> CallCost:
    """Count FLOPs of ``model(x, t)`` for ``x`` of shape ``(batch, *shape)`` on the model's device."""
    param = next(model.parameters())
    x = torch.randn(batch, *shape, device=param.device, dtype=param.dtype)
    steps = torch.full((batch,), t, device=param.device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x, steps)
    model.train(was_training)
    nfe = getattr(model, "nfe", None)
    return CallCost(int(counter.get_total_flops()), None if nfe is None else int(nfe))
