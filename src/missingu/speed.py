"""Fast paths: the same function computed faster, each behind a switch of the ``speed`` section.

Every switch is off by default and changes how a denoiser is run, not what it computes:

* ``autocast``: bf16 autocast for sampling and inference on CUDA (training has ``train.amp``);
  outputs are returned in float32.
* ``channels_last``: weights and inputs in NHWC memory layout (cuDNN's fast convolutions).
* ``compile``: ``torch.compile`` of the network (default mode, no dynamic shapes).
* ``compile_ode``: ``torch.compile`` of each ODE block's function alone, in place (the cU-Net; a
  network without ODE blocks is unchanged): one small graph per block width, run at every solver
  evaluation, where ``compile`` traces the whole solve unrolled (36 evaluations per block for the
  paper's RK4) and took minutes to compile.
* ``fused_adamw``: ``torch.optim.AdamW(fused=True)``: one kernel for the whole update.
* ``sdpa``: full attention through ``scaled_dot_product_attention`` (flash / memory-efficient
  kernels on CUDA). The explicit ``softmax(q k^T / sqrt(d)) v`` stays the default because torch's
  FLOP counter sees its matmuls on every device; FLOPs are always counted on the explicit path.
* ``cuda_graphs``: the denoiser's forward captured once per input shape with
  ``torch.cuda.graph`` and replayed (no kernel-launch overhead). The cU-Net's fixed-step ODE
  solver (``missingu.models.ode_block.fixed_step_solve``) never reads a device value back to the
  host, so its whole forward can be captured; adaptive solvers (``dopri5``) cannot be.
* ``data_on_device``: the training images live on the GPU; batches are gathered there from the
  same CPU-drawn indices, so training is unchanged to the bit.

Switches that need CUDA (``autocast``, ``cuda_graphs``, ``data_on_device``) are ignored on other
devices, with a warning naming them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .models.layers import SelfAttention
from .specs.speed import CUDA_ONLY, SpeedConfig  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def use_sdpa(model: nn.Module, on: bool = True) -> None:
    """Route every full-attention layer of ``model`` through ``scaled_dot_product_attention``."""
    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.sdpa = on


def optimizer(model: nn.Module, speed: SpeedConfig, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters, fused into one kernel with ``speed.fused_adamw``."""
    return torch.optim.AdamW(model.parameters(), fused=True if speed.fused_adamw else None, **kwargs)


def prepare_model(model: nn.Module, speed: SpeedConfig) -> nn.Module:
    """Apply the attention-kernel, memory-layout and ODE-function compile switches to ``model``
    (in place); returns it."""
    use_sdpa(model, speed.sdpa)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    if speed.compile_ode:
        compile_ode_functions(model)
    return model


def compile_ode_functions(model: nn.Module, backend: str = "inductor") -> int:
    """Compile each ODE block's function of ``model`` in place (``nn.Module.compile``: parameter
    names and the state dict unchanged), with :func:`compile_module`'s inductor settings; the
    number of functions compiled (0 for a network without ODE blocks)."""
    from .models.ode_block import ODEFunc

    funcs = [m for m in model.modules() if isinstance(m, ODEFunc)]
    _inductor_settings()
    for func in funcs:
        func.compile(backend=backend)
    return len(funcs)


def compile_module(module: nn.Module) -> nn.Module:
    """``torch.compile(module)`` with inductor's mix-order reductions off.

    With them on (the default since torch 2.10), the compiled backward of a ``(1, C, 1, 1)`` gain
    applied after a reduction over channels (``ChannelRMSNorm``, in both U-Nets) returns a ``[C]``
    gradient on CUDA and autograd rejects it ("CompiledFunctionBackward returned an invalid
    gradient ... got [256] but expected shape compatible with [1, 256, 1, 1]", pytorch#178080;
    the same fusion gave silently wrong gradients elsewhere, pytorch#193061). The switch is
    global to inductor and only affects how its Triton kernels are fused."""
    _inductor_settings()
    return torch.compile(module)


def _inductor_settings() -> None:
    """Inductor's mix-order reductions off (:func:`compile_module` says why)."""
    import torch._inductor.config as inductor

    triton_config = getattr(inductor, "triton", None)
    if getattr(triton_config, "mix_order_reduction", False):
        triton_config.mix_order_reduction = False
        log.info("torch.compile: inductor's mix-order reductions switched off (pytorch#178080)")


def to_layout(x: Tensor, speed: SpeedConfig) -> Tensor:
    """``x`` in the memory layout the switches ask for."""
    return x.contiguous(memory_format=torch.channels_last) if speed.channels_last and x.dim() == 4 else x


class FastDenoiser:
    """``denoiser(x, t)`` for inference with the switches of ``speed`` applied; exposes the
    wrapped model's ``nfe`` (ODE evaluations of the last call) where it has one.

    With ``cuda_graphs``, the first call at each input shape runs the network three times on a
    side stream (warm-up, and compilation with ``compile``), captures one call into a CUDA graph,
    and every call replays it on copies of the inputs; the output is a fresh tensor.
    """

    def __init__(self, model: nn.Module, speed: SpeedConfig, device: torch.device):
        self.model = model.eval()
        self.speed = speed = speed.on(device)
        self.device = device
        prepare_model(model, speed)
        self.fn: Callable[[Tensor, Tensor], Tensor] = compile_module(model) if speed.compile else model
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}

    @property
    def nfe(self) -> int:
        return int(getattr(self.model, "nfe", 0))

    def _run(self, x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.speed.autocast):
            return self.fn(to_layout(x, self.speed), t).float()

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if not self.speed.cuda_graphs:
            return self._run(x, t)
        key = (tuple(x.shape), x.dtype, t.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, t)
        graph, static_x, static_t, static_out = self.graphs[key]
        static_x.copy_(x)
        static_t.copy_(t)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: Tensor, t: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]:
        static_x, static_t = x.clone(), t.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._run(static_x, static_t)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._run(static_x, static_t)
        return graph, static_x, static_t, static_out
