"""Measured model cost: parameters, FLOPs, ODE evaluations, latency, sampling time, memory.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and
convolutions (2 FLOPs per multiply-accumulate) and follows every ODE-function evaluation
inside torchdiffeq; MACs = FLOPs / 2. Element-wise ops, norms and resampling are not counted.
Latency is the median of ``repeats`` timed calls after ``warmup`` untimed ones (CUDA:
synchronised CUDA events). Training memory is ``torch.cuda.max_memory_allocated`` on CUDA and,
on the CPU, how far one training step raises the resident set of a fresh subprocess.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ConfigError, build, positive, to_dict
from .diffusion import Diffusion, DiffusionConfig
from .models import ARCHITECTURES, CUNetConfig, build_model
from .samplers import SamplerSpec, sample


def format_shape(shape: Sequence[int]) -> str:
    """``(3, 64, 64)`` -> ``"3x64x64"``, as shapes appear in profile rows."""
    return "x".join(map(str, shape))


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
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
    return statistics.median(times)


@torch.no_grad()
def call_latency(model: nn.Module, shape: Sequence[int], batch: int, warmup: int, repeats: int) -> float:
    """Median seconds of one denoiser call on a batch."""
    x, steps = _inputs(model, shape, batch)
    model.eval()
    return time_fn(lambda: model(x, steps), x.device, warmup, repeats)


def sample_latency(
    model: nn.Module, diffusion: Diffusion, spec: SamplerSpec, shape: Sequence[int], batch: int, seed: int = 0
) -> tuple[float, int, int | None]:
    """Seconds to draw one batch with ``spec`` (after one warm-up network call), with the
    network calls and ODE evaluations it took."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        model(*_inputs(model, shape, batch))
    _sync(device)
    t0 = time.perf_counter()
    out = sample(model, diffusion, spec, shape, range(seed, seed + batch), device=device)
    _sync(device)
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
    subprocess builds the model, then reports how far one step raised its resident set.
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
    job = json.dumps({"arch": arch, "config": to_dict(config), "shape": list(shape), "batch": batch,
                      "threads": torch.get_num_threads()})
    proc = subprocess.run([sys.executable, "-m", "missingu.profiling", job], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement subprocess failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["step_mib"]


def _status_kib(field_name: str) -> int:
    """A ``Vm*`` field of /proc/self/status (Linux), in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _memory_worker(job: dict) -> None:
    """One training step in a fresh process; prints how far it raised the resident set.

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
    print(json.dumps({"step_mib": (peak - before) / 1024, "peak_rss_mib": peak / 1024}))


@dataclass(frozen=True)
class ProfileConfig:
    """What ``missingu profile`` measures. ``shapes`` are extra (C, H, W) inputs besides each
    dataset's; ``batch_sizes`` for per-call latency; ``sample_batch`` images for full-sample
    latency with each of ``samplers``; ``memory_batch`` for training-step memory; ``ablations``
    adds cU-Net variants (parameters, FLOPs, NFE and latency at the first batch size)."""

    shapes: tuple[tuple[int, int, int], ...] = ()
    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 3
    repeats: int = 20
    sample_batch: int = 8
    samplers: tuple[SamplerSpec, ...] = field(default_factory=lambda: (
        SamplerSpec("ddpm", "ddpm"),
        SamplerSpec("ddim50", "ddim", steps=50),
        SamplerSpec("pf_ode", "pf_ode", method="dopri5", rtol=1e-5, atol=1e-5),
    ))
    memory_batch: int = 8
    ablations: bool = True

    def __post_init__(self) -> None:
        for i, s in enumerate(self.shapes):
            for j, v in enumerate(s):
                positive(v, f"shapes[{i}][{j}]")
        if not self.batch_sizes:
            raise ConfigError("batch_sizes: needs at least one batch size")
        for i, b in enumerate(self.batch_sizes):
            positive(b, f"batch_sizes[{i}]")
        if self.warmup < 0:
            raise ConfigError(f"warmup: must be zero or positive, got {self.warmup}")
        for key in ("repeats", "sample_batch", "memory_batch"):
            positive(getattr(self, key), key)


def cunet_ablations(config: CUNetConfig) -> dict[str, CUNetConfig]:
    """The cU-Net variants of the efficiency study, derived from one cU-Net config."""
    return {
        "augmented_first_order": replace(config, dynamics="augmented_first_order"),
        "no_attention": replace(config, attention=("none",) * len(config.channels)),
        "rk4_1": replace(config, solver="rk4", solver_steps=1),
        "rk4_2": replace(config, solver="rk4", solver_steps=2),
        "rk4_4": replace(config, solver="rk4", solver_steps=4),
        "euler_4": replace(config, solver="euler", solver_steps=4),
        "dopri5": replace(config, solver="dopri5"),
        "no_time_conditioning": replace(config, time_conditioning=False),
    }


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


def profile_model(
    arch: str,
    config: Any,
    shape: tuple[int, int, int],
    cfg: ProfileConfig,
    device: torch.device,
    *,
    state_dict: dict | None = None,
    diffusion: Diffusion | None = None,
    full: bool = True,
) -> dict[str, Any]:
    """One row of measurements for a model config at an input shape. ``state_dict`` is loaded
    when its names and shapes fit the model (an ablation variant with other layers keeps its
    initial weights; the row's ``weights`` column says which). ``full=False`` (ablation rows)
    skips sampling, memory and all but the first batch size."""
    model = build_model(arch, config, shape[0], shape[1]).to(device)
    trained = state_dict is not None and weights_fit(model, state_dict)
    if trained:
        model.load_state_dict(state_dict)
    cost = measure_call(model, shape)
    row: dict[str, Any] = {
        "shape": format_shape(shape),
        "weights": "trained" if trained else "init",
        "params_total": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "flops_per_call": cost.flops, "macs_per_call": int(cost.macs), "ode_evals_per_call": cost.nfe,
    }
    for batch in cfg.batch_sizes if full else cfg.batch_sizes[:1]:
        seconds = call_latency(model, shape, batch, cfg.warmup, cfg.repeats)
        row[f"latency_ms_b{batch}"] = seconds * 1000
        row[f"images_per_s_b{batch}"] = batch / seconds
    if not full:
        return row
    diffusion = (diffusion or Diffusion()).to(device)
    for spec in cfg.samplers:
        seconds, calls, evals = sample_latency(model, diffusion, spec, shape, cfg.sample_batch)
        row[f"sample_s_{spec.name}"] = seconds
        row[f"sample_calls_{spec.name}"] = calls
    row["train_step_mib"] = train_step_memory(arch, config, shape, cfg.memory_batch, device)
    if isinstance(config, CUNetConfig):
        adjoint = replace(config, adjoint=not config.adjoint)
        key = "train_step_mib_adjoint" if not config.adjoint else "train_step_mib_no_adjoint"
        row[key] = train_step_memory(arch, adjoint, shape, cfg.memory_batch, device)
    return row


if __name__ == "__main__":  # the memory subprocess: python -m missingu.profiling JOB_JSON
    _memory_worker(json.loads(sys.argv[1]))
