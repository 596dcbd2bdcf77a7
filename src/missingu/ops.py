"""Where a network's time goes: ``torch.profiler``'s self time of every operator in a call or a
training step, each operator in a class.

The self time of an operator is its own time, without the operators it calls: on the CPU the host
time, on a CUDA device the time of the kernels it launched (a kernel is counted once, on the
operator that launched it). Per call or step: the profiled total over ``repeats`` runs, divided by
``repeats``. Classes, by the operator's name (the first that matches, in this order):
``optimizer``, ``convolution`` (forward and backward), ``attention`` (matrix products, softmax,
scaled-dot-product attention), ``normalization`` (group, layer, batch, instance norm),
``activation``, ``memory`` (copies, layout changes, concatenation, resampling), ``elementwise``
(arithmetic, reductions, random draws), ``autograd`` (the engine's own bookkeeping), ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from .measure import sync

OP_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("autograd", ("autograd::", "backward0", "accumulategrad")),
    ("optimizer", ("_foreach_", "adam", "optimizer.")),
    ("convolution", ("conv",)),
    ("attention", ("scaled_dot_product", "softmax", "flash", "efficient_attention", "aten::mm", "bmm", "addmm",
                   "matmul", "einsum", "aten::linear")),
    ("normalization", ("group_norm", "layer_norm", "batch_norm", "instance_norm", "rms_norm")),
    ("activation", ("silu", "gelu", "relu", "softplus", "sigmoid", "tanh")),
    ("memory", ("copy", "clone", "contiguous", "cat", "stack", "empty", "zero", "fill", "index", "slice", "view",
                "reshape", "permute", "transpose", "expand", "strided", "resize", "upsample", "pixel", "pad",
                "chunk", "split", "unsqueeze", "squeeze", "select", "repeat", "flatten", "narrow", "flip", "detach",
                "ones_like", "scalar", "item", "aten::t", "aten::to")),
    ("elementwise", ("add", "mul", "sub", "div", "pow", "sqrt", "exp", "log", "neg", "sum", "mean", "lerp",
                     "where", "clamp", "sin", "cos", "abs", "max", "min", "norm", "rand", "normal", "mse", "gather",
                     "arange", "uniform", "dropout", "lt", "gt", "eq")),
)
CLASSES = (*(name for name, _ in OP_CLASSES), "other")


def op_class(name: str) -> str:
    """The class of operator ``name`` (see the module docstring)."""
    low = name.lower()
    for cls, patterns in OP_CLASSES:
        if any(p in low for p in patterns):
            return cls
    return "other"


def op_breakdown(
    fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1
) -> list[dict[str, Any]]:
    """Rows ``{op, op_class, calls, self_ms, share}`` of ``fn`` (a call or a training step) per run,
    slowest first, after ``warmup`` unprofiled runs; ``share`` of the summed self time."""
    for _ in range(warmup):
        fn()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            fn()
        sync(device)
    rows = []
    for event in prof.key_averages():
        if event.device_type != DeviceType.CPU:  # kernels: counted on the operator that launched them
            continue
        us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if us > 0:
            rows.append({"op": event.key, "op_class": op_class(event.key), "calls": event.count / repeats,
                         "self_ms": us / 1000 / repeats})
    rows.sort(key=lambda r: -r["self_ms"])
    total = sum(r["self_ms"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["self_ms"] / total
    return rows


def class_totals(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Self milliseconds per class (``<class>_ms``, every class present) and their sum (``total_ms``)."""
    out = {f"{cls}_ms": 0.0 for cls in CLASSES}
    for r in rows:
        out[f"{r['op_class']}_ms"] += r["self_ms"]
    out["total_ms"] = sum(out.values())
    return out
