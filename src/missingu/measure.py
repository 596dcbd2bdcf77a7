"""Measuring a network: parameters, FLOPs, ODE evaluations, latency, sampling time, memory, and
the device a measurement ran on. Shared by the efficiency stage (profile, bench), the step-aware
study (FLOPs per network) and the denoising task (the device stamped on its rows).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and
convolutions (2 FLOPs per multiply-accumulate) and follows every ODE-function evaluation
inside torchdiffeq; MACs = FLOPs / 2. Element-wise ops, norms and resampling are not counted.
Latency is the median of ``repeats`` timed calls after ``warmup`` untimed ones (CUDA:
synchronised CUDA events). Training memory is ``torch.cuda.max_memory_allocated`` on CUDA and,
on the CPU, how far one training step raises the resident set of a fresh child process (forked
from a server that has imported torch and nothing else, so each measurement starts from the same
clean heap without paying torch's import again).
"""

from __future__ import annotations

import functools
import multiprocessing
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import build, to_dict
from .diffusion import Diffusion, DiffusionConfig
from .models import ARCHITECTURES, build_model
from .samplers import SamplerSpec, sample


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


def _inputs(model: nn.Module, shape: Sequence[int], batch: int, t: float = 500.0):
    param = next(model.parameters())
    x = torch.randn(batch, *shape, device=param.device, dtype=param.dtype)
    return x, torch.full((batch,), t, device=param.device)


@torch.no_grad()
def measure_call(model: nn.Module, shape: Sequence[int], batch: int = 1, t: float = 500.0) -> CallCost:
    """Count FLOPs of ``model(x, t)`` for ``x`` of shape ``(batch, *shape)`` on the model's device."""
    x, steps = _inputs(model, shape, batch, t)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x, steps)
    model.train(was_training)
    nfe = getattr(model, "nfe", None)
    return CallCost(int(counter.get_total_flops()), None if nfe is None else int(nfe))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    return statistics.median(time_all(fn, device, warmup, repeats))


def time_all(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls (the repeats an
    interval on a time is made from)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def call_latencies(model: nn.Module, shape: Sequence[int], batch: int, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` denoiser calls on a batch, after ``warmup`` calls."""
    x, steps = _inputs(model, shape, batch)
    model.eval()
    return time_all(lambda: model(x, steps), x.device, warmup, repeats)


def sample_latency(
    model: nn.Module, diffusion: Diffusion, spec: SamplerSpec, shape: Sequence[int], batch: int, seed: int = 0
) -> tuple[float, int, int | None]:
    """Seconds to draw one batch with ``spec`` (after one warm-up network call), with the
    network calls and ODE evaluations it took."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        model(*_inputs(model, shape, batch))
    sync(device)
    t0 = time.perf_counter()
    out = sample(model, diffusion, spec, shape, range(seed, seed + batch), device=device)
    sync(device)
    return time.perf_counter() - t0, out.network_calls, out.ode_evaluations


def _train_step(model: nn.Module, diffusion: Diffusion, shape: Sequence[int], batch: int) -> None:
    device = next(model.parameters()).device
    model.train()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *shape, generator=g).to(device)
    t = diffusion.sample_timesteps(batch, g).to(device)
    noise = torch.randn(batch, *shape, generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diffusion.loss(model, x0, t, noise).backward()
    opt.step()


def train_step_memory(arch: str, config: Any, shape: Sequence[int], batch: int, device: torch.device) -> float:
    """Peak memory (MiB) of one training step (forward, backward, AdamW update).

    CUDA: ``max_memory_allocated`` minus the memory held before the step. CPU (Linux): a fresh
    child process builds the model, then reports how far one step raised its resident set.
    """
    if device.type == "cuda":
        model = build_model(arch, config, shape[0], shape[1]).to(device)
        diffusion = Diffusion(DiffusionConfig(), device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _train_step(model, diffusion, shape, batch)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    job = {"arch": arch, "config": to_dict(config), "shape": list(shape), "batch": batch,
           "threads": torch.get_num_threads()}
    ctx = _memory_context()
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_memory_worker, args=(job, send))
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # the child ended without sending
        result = None
    child.join()
    if child.exitcode != 0 or result is None:
        raise RuntimeError(f"memory measurement child process failed (exit code {child.exitcode}); its error is "
                           "above, on stderr")
    return result["step_mib"]


@functools.cache
def _memory_context() -> Any:
    """The ``forkserver`` context the memory children fork from: the server imports this module
    (torch with it) once per process and never runs a model, so every child starts as clean as a
    fresh interpreter (about 3 s of import saved per measurement)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _status_kib(field_name: str) -> int:
    """A ``Vm*`` field of /proc/self/status (Linux), in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _memory_worker(job: dict, send: Any) -> None:
    """One training step in a fresh child process; sends how far it raised the resident set.

    The peak (VmHWM) is reset to the current RSS right before the step by writing 5 to
    /proc/self/clear_refs. (``ru_maxrss`` would not do: it keeps the parent's size across fork.)
    """
    torch.set_num_threads(job["threads"])
    arch = ARCHITECTURES[job["arch"]]
    config = build(arch.config_cls, job["config"], "model")
    shape = job["shape"]
    model = build_model(job["arch"], config, shape[0], shape[1])
    diffusion = Diffusion(DiffusionConfig())
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _status_kib("VmRSS")
    _train_step(model, diffusion, shape, job["batch"])
    peak = _status_kib("VmHWM")
    send.send({"step_mib": (peak - before) / 1024, "peak_rss_mib": peak / 1024})
    send.close()


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, torch version and threads: stamped on every row."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    if device.type == "cpu":
        name = _cpu_name() or name
    return {"device": device.type, "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def weights_fit(model: nn.Module, state_dict: dict) -> bool:
    """Whether ``state_dict`` has exactly the model's parameter and buffer names and shapes."""
    own = model.state_dict()
    return own.keys() == state_dict.keys() and all(own[k].shape == v.shape for k, v in state_dict.items())


def train_flops_per_image(model: nn.Module, diffusion: Diffusion, shape: Sequence[int], device: torch.device) -> int:
    """FLOPs of one training image: forward and backward of ``diffusion.loss`` at batch 2, halved."""
    x0 = torch.randn(2, *shape, device=device)
    t = torch.tensor([0, diffusion.timesteps - 1], device=device)
    model.train()
    with FlopCounterMode(display=False) as counter:
        diffusion.loss(model, x0, t, torch.randn_like(x0)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops()) // 2


# Aten operations that launch no kernel (views, allocation): left out of ``kernel_ops_per_call``.
_NO_KERNEL = {"view", "_unsafe_view", "expand", "unsqueeze", "squeeze", "transpose", "t", "permute", "split",
              "split_with_sizes", "chunk", "alias", "slice", "select", "as_strided", "empty", "empty_like",
              "detach", "unbind", "reshape", "_reshape_alias", "lift_fresh", "unflatten"}


@torch.no_grad()
def kernel_ops_per_call(model: nn.Module, shape: Sequence[int], device: torch.device) -> int:
    """Aten operations of one eager forward at batch 1 that compute something (views and
    allocations left out): about the number of kernels an eager GPU forward launches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ not in _NO_KERNEL:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    model.eval()
    x = torch.randn(1, *shape, device=device)
    with Count():
        model(x, torch.tensor([1], device=device))
    return Count.n
