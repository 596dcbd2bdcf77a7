"""The training loop's divergence guard: a step whose losses or gradients are not finite is
stopped before the optimizer applies it, so no non-finite weight reaches a checkpoint.

One step of a slimmable network runs several passes (the sandwich widths), each adding its
gradient to the parameters' ``.grad``. The guard records every pass's loss and whether the
accumulated gradient ``g_1 + ... + g_k`` is still finite after pass ``k`` (once a sum is not finite
it stays so, so the first such pass is the width that broke it), then checks the losses of all
passes (averaged over processes) and the total gradient norm before the optimizer step.

With fp16 autocast a ``GradScaler`` owns non-finite gradients: it skips the step and lowers its
scale, which is the normal course of loss scaling, not a divergence; the guard then leaves
gradients to it. A non-finite loss is a divergence whatever the precision (the scale does not
reach the forward pass).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from . import distributed
from .specs.train import TrainingDiverged  # noqa: F401  (re-exported: the CLI reads it without torch)


def _grad_norm(model: nn.Module) -> Tensor:
    """``||g||_2`` over all parameters' gradients (a 0-d tensor; no host synchronisation)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))


class StepGuard:
    """Watches one optimizer step. Call :meth:`passed` after each pass's backward and
    :meth:`check` after the gradients are unscaled and clipped, before the optimizer step.
    ``check_grads``: whether a non-finite gradient is a divergence (no ``GradScaler`` handles it)."""

    def __init__(self, model: nn.Module, widths: Sequence[float | None], check_grads: bool):
        self.model, self.widths, self.check_grads = model, list(widths), check_grads
        self.losses: list[Tensor] = []
        self.grad_norms: list[Tensor] = []

    def passed(self, loss: Tensor) -> None:
        """Record a pass's loss (this process's) and, when watched, its accumulated gradient norm."""
        self.losses.append(loss.detach().float().reshape(()))
        if self.check_grads and len(self.widths) > 1:
            self.grad_norms.append(_grad_norm(self.model).to(loss.device))

    def check(self, step: int, grad_norm: float, last_saved: int | None, resume_path: Path) -> list[float]:
        """Each pass's loss averaged over the processes (one all-reduce); raises
        :class:`TrainingDiverged` at the first pass whose loss, or whose accumulated gradient, is
        not finite. ``step`` counts from 1; ``last_saved`` is the step of the intact checkpoint
        at ``resume_path`` (``None``: none written yet)."""
        losses = distributed.means(torch.stack(self.losses))
        norms = torch.stack(self.grad_norms).tolist() if self.grad_norms else [grad_norm] * len(losses)
        grads_ok = [math.isfinite(v) for v in norms]
        grads_ok[-1] = grads_ok[-1] and math.isfinite(grad_norm)  # the total, as clipping measured it
        for width, loss, norm, grad_ok in zip(self.widths, losses, norms, grads_ok):
            if not math.isfinite(loss):
                what = f"training loss became {loss}"
            elif self.check_grads and not grad_ok:
                what = f"the gradient norm became {norm if not math.isfinite(norm) else grad_norm} with a finite loss"
            else:
                continue
            at = f" (width {width})" if len(self.widths) > 1 else ""
            kept = (f"the checkpoint of step {last_saved} in {resume_path} is intact"
                    if last_saved is not None else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"{what} at step {step}{at}; stopped without applying or saving the step ({kept}). "
                f"Lower train.lr, keep train.grad_clip on, or check the data."
            )
        return losses

