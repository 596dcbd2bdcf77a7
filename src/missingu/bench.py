"""Speed benchmark: training throughput, model FLOPs utilisation, peak memory and sampling latency
of every model of a config (and the reference ``Unet`` of denoising-diffusion-pytorch with the
same settings, when installed), under each fast-path variant of ``missingu.speed``.

Parts (each row written to the CSV as soon as it is measured):

* ``train``: images/s of full training steps (batch from :class:`missingu.batches.BatchSource` of
  random uint8 images, ``diffusion.loss``, backward, AdamW), the peak memory of those steps, and
  the model FLOPs utilisation ``MFU = F x images/s / P``: ``F`` the FLOPs of one image's forward and
  backward pass, counted by ``torch.utils.flop_counter`` (matmuls and convolutions, explicit
  attention); ``P`` the device's peak dense bf16 FLOP/s, from the datasheet table ``PEAK_BF16`` or
  ``--peak-tflops`` (the source is named in every row; an unknown device gets no MFU).
* ``call``: milliseconds of one denoiser call at each batch size, and the number of aten operations
  an eager forward runs (views left out; about its kernel launches on a GPU, whose fixed cost
  dominates at batch 1).
* ``sample``: seconds per image of a whole sampler run (``bench.sampler``) at each batch size.
* ``ops`` (on request): where a call's and a training step's time goes, per operator (:mod:`missingu.ops`).
* ``curve`` (on request): each network trained ``bench.curve_steps`` steps with the same data, seed
  and recipe, its loss per step (:mod:`missingu.curve`): whether the faster one trains the same.

Fairness: all models of one variant are built before timing, and each of ``rounds`` rounds times
every model in turn, so slow drifts of clock or temperature hit all of them alike; the reported
figure is the median over rounds. Benchmarks are measurements, never test assertions.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batches import BatchSource, step_generator
from .config import ConfigError, to_dict
from .curve import curves, summary
from .diffusion import Diffusion
from .measure import environment, kernel_ops_per_call, sync, time_fn, train_flops_per_image
from .models import UNetConfig, compatible, model_from_spec
from .ops import class_totals, op_breakdown
from .samplers import SamplerSpec, sample
from .specs.bench import PARTS, BenchConfig, work  # noqa: F401  (re-exported)
from .speed import FastDenoiser, SpeedConfig, compile_module, optimizer, prepare_model, to_layout
from .task import Result, failure_status, format_shape

log = logging.getLogger(__name__)

REFERENCE = "reference_unet"

# Peak dense (no sparsity) bf16 tensor-core FLOP/s from NVIDIA's datasheets, by a substring of
# torch.cuda.get_device_name(); the first match wins.
PEAK_BF16: tuple[tuple[str, float, str], ...] = (
    ("H200", 989.4e12, "NVIDIA H200 SXM datasheet, dense BF16"),
    ("H100 PCIe", 756.0e12, "NVIDIA H100 PCIe datasheet, dense BF16"),
    ("H100 NVL", 835.0e12, "NVIDIA H100 NVL datasheet, dense BF16"),
    ("H100", 989.4e12, "NVIDIA H100 SXM datasheet, dense BF16"),
    ("A100", 312.0e12, "NVIDIA A100 datasheet, dense BF16"),
    ("L40S", 362.05e12, "NVIDIA L40S datasheet, dense BF16"),
    ("L4", 121.0e12, "NVIDIA L4 datasheet, dense BF16"),
)


def peak_flops(device: torch.device, override_tflops: float | None = None) -> tuple[float | None, str]:
    """The device's peak dense bf16 FLOP/s and where the figure comes from."""
    if override_tflops is not None:
        return override_tflops * 1e12, "given (--peak-tflops)"
    if device.type != "cuda":
        return None, f"unknown for {device.type} (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, value, source in PEAK_BF16:
        if key in name:
            return value, source
    return None, f"unknown for {name} (give --peak-tflops)"


def reference_unet(config: UNetConfig, channels: int) -> tuple[nn.Module | None, str]:
    """denoising-diffusion-pytorch's ``Unet`` with ``config``'s settings, or ``None`` and why not."""
    if importlib.util.find_spec("denoising_diffusion_pytorch") is None:
        return None, "denoising-diffusion-pytorch is not installed (pip install denoising-diffusion-pytorch==1.8.3)"
    if "none" in config.attention or config.attn_heads != 4 or config.attn_dim_head != 32 or config.dropout:
        return None, ("the reference Unet has linear or full attention at every level with 4 heads x 32 and no "
                      "dropout; this config differs")
    from denoising_diffusion_pytorch import Unet

    full = tuple(a == "full" for a in config.attention)
    return Unet(dim=config.dim, dim_mults=config.dim_mults, channels=channels,
                resnet_block_groups=config.groups, full_attn=full), ""


@dataclass
class Entry:
    """One benchmarked network: its name, architecture and a builder of fresh, seeded copies."""

    name: str
    arch: str
    preset: str
    build: Callable[[], nn.Module]


def entries(
    cfg: Any, shape: Sequence[int], models: Sequence[str] | None, bench: BenchConfig
) -> tuple[list[Entry], str]:
    """The models to benchmark (config entries that fit ``shape``, then the reference) and, when
    the reference is left out, why."""

    specs = [cfg.model(m) for m in models] if models else list(cfg.models)
    out, note = [], ""
    for spec in specs:
        if not compatible(spec.resolve(), tuple(shape)):
            log.warning("bench: %s cannot take %s; left out", spec.name, format_shape(shape))
            continue
        out.append(Entry(spec.name, spec.arch, spec.preset, lambda s=spec: model_from_spec(s, shape[0], shape[1])))
    unet = next((s for s in specs if s.arch == "unet"), None)
    if bench.reference and unet is not None:
        config = unet.resolve()
        ref, note = reference_unet(config, shape[0])
        if ref is not None:
            out.append(Entry(REFERENCE, "reference", unet.preset, lambda: reference_unet(config, shape[0])[0]))
    elif bench.reference:
        note = "no U-Net in the config to mirror"
    return out, note


def _fresh(entry: Entry, device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return entry.build().to(device)


class _Trainer:
    """One model's training steps under a variant, for throughput timing."""

    def __init__(self, entry: Entry, speed: SpeedConfig, shape: Sequence[int], batch: int,
                 diffusion: Diffusion, device: torch.device):
        self.model = prepare_model(_fresh(entry, device), speed).train()
        self.net = compile_module(self.model) if speed.compile else self.model
        self.opt = optimizer(self.model, speed, lr=1e-4)
        self.speed, self.diffusion, self.device = speed, diffusion, device
        images = torch.randint(0, 256, (256, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        self.batches = BatchSource(images, diffusion, batch, True, device, on_device=speed.data_on_device)
        self.step_no = 0
        self.losses: list[float] = []

    def step(self) -> None:
        x0, t, noise = self.batches(step_generator(0, self.step_no))
        self.step_no += 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.speed.autocast):
            loss = self.diffusion.loss(self.net, to_layout(x0, self.speed), t, to_layout(noise, self.speed))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return time.perf_counter() - t0


def run_bench(
    cfg: Any,
    bench: BenchConfig,
    device: torch.device,
    models: Sequence[str] | None = None,
    on_row: Callable[[list[dict]], None] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Measure every part of ``bench`` for every model and variant; ``on_row(rows)`` after each row.

    A variant that fails for a model (a compile error, say) gives a row whose ``status`` names the
    error; out-of-memory is reported as such. The other rows are still measured. Part ``ops`` adds
    the self time per operator class of a call and of a training step as rows (``ops_call``,
    ``ops_train``) and each operator's row to ``tables["ops"]``; part ``curve`` a summary row per
    network and each step's row to ``tables["curve"]``."""
    tables = {} if tables is None else tables
    shape = bench.input_shape(cfg.datasets)
    models_, ref_note = entries(cfg, shape, models, bench)
    if not models_:
        raise ConfigError(f"bench: no model of the config can take {format_shape(shape)}")
    env = environment(device)
    peak, peak_source = peak_flops(device, bench.peak_tflops)
    diffusion = Diffusion(cfg.diffusion).to(device)
    rows: list[dict[str, Any]] = []

    def emit(entry: Entry | None, variant: str, part: str, **values: Any) -> None:
        row = {**env, "model": entry.name if entry else REFERENCE, "arch": entry.arch if entry else "reference",
               "preset": entry.preset if entry else "", "variant": variant, "part": part,
               "shape": format_shape(shape), "status": "ok", **values}
        rows.append(row)
        log.info("bench %s %s %s: %s", row["model"], variant, part,
                 {k: v for k, v in values.items() if k != "status"})
        if on_row is not None:
            on_row(rows)

    if bench.reference and ref_note:
        emit(None, "-", "-", status=f"reference left out: {ref_note}")
    flops = {e.name: train_flops_per_image(_fresh(e, device), diffusion, shape, device) for e in models_}
    kernels = {e.name: kernel_ops_per_call(_fresh(e, device), shape, device) for e in models_}
    for variant in bench.variants:
        speed = SpeedConfig.parse(variant)
        missing = speed.unavailable(device)
        if missing:
            for e in models_:
                emit(e, variant, "-", status=f"not run: {', '.join(missing)} need{'s' if len(missing) == 1 else ''} "
                                             f"a CUDA device; this is {device.type}")
            continue
        if "train" in bench.parts:
            _bench_train(models_, speed, variant, shape, bench, diffusion, device, flops, peak, peak_source, emit)
        if "call" in bench.parts or "sample" in bench.parts:
            _bench_inference(models_, speed, variant, shape, bench, diffusion, device, kernels, emit)
        if "ops" in bench.parts:
            for e in models_:
                for mode, batch, ops in _bench_ops(e, speed, shape, bench, diffusion, device):
                    if isinstance(ops, str):
                        emit(e, variant, f"ops_{mode}", batch=batch, status=ops)
                        continue
                    emit(e, variant, f"ops_{mode}", batch=batch, **class_totals(ops))
                    tables.setdefault("ops", []).extend(
                        {**env, "model": e.name, "variant": variant, "mode": mode, "batch": batch, **r} for r in ops)
        if "curve" in bench.parts:
            data, got = curves(models_, cfg, bench, speed, shape, diffusion, device)
            for e in models_:
                r = got[e.name]
                emit(e, variant, "curve", batch=bench.train_batch, data=data.name,
                     **({"status": r} if isinstance(r, str) else summary(r)))
                if not isinstance(r, str):
                    tables.setdefault("curve", []).extend(
                        {**env, "model": e.name, "arch": e.arch, "variant": variant, **x} for x in r)
            _cleanup(device)
    return rows


def _bench_ops(e: Entry, speed: SpeedConfig, shape: Sequence[int], bench: BenchConfig, diffusion: Diffusion,
               device: torch.device) -> list[tuple[str, int, list[dict[str, Any]] | str]]:
    """Where the time of one call (at the largest call batch, ``call_repeats`` profiled) and of one
    training step (``train_batch``, ``train_steps`` profiled) goes: :func:`missingu.ops.op_breakdown`,
    or the error that stopped it."""
    def call(batch: int) -> Callable[[], Any]:
        den, (x, t) = FastDenoiser(_fresh(e, device), speed, device), _call_inputs(batch, shape, device)
        return lambda: den(x, t)

    jobs = (("call", max(bench.call_batches), bench.call_repeats, call),
            ("train", bench.train_batch, bench.train_steps,
             lambda batch: _Trainer(e, speed, shape, batch, diffusion, device).step))
    out: list[tuple[str, int, list[dict[str, Any]] | str]] = []
    for mode, batch, repeats, make in jobs:
        try:
            out.append((mode, batch, op_breakdown(make(batch), device, repeats, max(bench.warmup, 1))))
        except RuntimeError as err:  # compile failures and out-of-memory: reported as the row's status
            out.append((mode, batch, failure_status(err)))
        finally:
            _cleanup(device)
    return out


def _call_inputs(batch: int, shape: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A call's inputs: ``batch`` Gaussian images of ``shape`` at step 500."""
    return torch.randn(batch, *shape, device=device), torch.full((batch,), 500, device=device)


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _bench_train(models_, speed, variant, shape, bench, diffusion, device, flops, peak, peak_source, emit) -> None:
    trainers: dict[str, _Trainer] = {}
    memory: dict[str, float] = {}
    failed: dict[str, str] = {}
    for e in models_:
        try:
            trainers[e.name] = _Trainer(e, speed, shape, bench.train_batch, diffusion, device)
            tr = trainers[e.name]
            if device.type == "cuda":
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            tr.timed(max(bench.warmup, 1))  # compiles, allocates optimizer state
            warm_s = time.perf_counter() - t0
            if device.type == "cuda":
                memory[e.name] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            log.info("bench %s %s: warm-up %.1f s", e.name, variant, warm_s)
        except RuntimeError as err:  # compile failures and out-of-memory are RuntimeErrors: reported
            failed[e.name] = failure_status(err)
            trainers.pop(e.name, None)
            _cleanup(device)
    times: dict[str, list[float]] = {n: [] for n in trainers}
    for _ in range(bench.rounds):
        for name, tr in trainers.items():
            times[name].append(tr.timed(bench.train_steps))
    for e in models_:
        if e.name in failed:
            emit(e, variant, "train", batch=bench.train_batch, status=failed[e.name])
            continue
        seconds = statistics.median(times[e.name]) / bench.train_steps
        ips = bench.train_batch / seconds
        emit(e, variant, "train", batch=bench.train_batch, steps=bench.train_steps * bench.rounds,
             ms_per_step=seconds * 1000, images_per_s=ips, flops_per_image=flops[e.name],
             tflops_per_s=flops[e.name] * ips / 1e12, mfu=flops[e.name] * ips / peak if peak else None,
             peak_tflops=peak / 1e12 if peak else None, peak_source=peak_source,
             train_peak_mib=memory.get(e.name))
    trainers.clear()
    _cleanup(device)


def _bench_inference(models_, speed, variant, shape, bench, diffusion, device, kernels, emit) -> None:
    denoisers: dict[str, FastDenoiser] = {}
    for e in models_:
        denoisers[e.name] = FastDenoiser(_fresh(e, device), speed, device)
    spec: SamplerSpec = bench.sampler
    if "call" in bench.parts:
        for batch in bench.call_batches:
            x, t = _call_inputs(batch, shape, device)
            results: dict[str, list[float] | str] = {n: [] for n in denoisers}
            for _ in range(bench.rounds):
                for name, den in denoisers.items():
                    if isinstance(results[name], str):
                        continue
                    try:
                        results[name].append(time_fn(lambda d=den, x=x, t=t: d(x, t), device, bench.warmup,
                                                     bench.call_repeats))
                    except RuntimeError as err:
                        results[name] = failure_status(err)
            for e in models_:
                r = results[e.name]
                if isinstance(r, str):
                    emit(e, variant, "call", batch=batch, status=r)
                else:
                    ms = statistics.median(r) * 1000
                    emit(e, variant, "call", batch=batch, ms_per_call=ms, images_per_s=batch / ms * 1000,
                         kernel_ops_per_call=kernels[e.name])
    if "sample" in bench.parts:
        for batch in bench.sample_batches:
            seeds = range(batch)
            results = {n: [] for n in denoisers}
            for name, den in denoisers.items():  # warm-up: captures graphs, compiles
                try:
                    sample(den, diffusion, spec, shape, seeds, device=device)
                except RuntimeError as err:
                    results[name] = failure_status(err)
            calls: dict[str, int] = {}
            for _ in range(bench.rounds):
                for name, den in denoisers.items():
                    if isinstance(results[name], str):
                        continue
                    sync(device)
                    t0 = time.perf_counter()
                    out = sample(den, diffusion, spec, shape, seeds, device=device)
                    sync(device)
                    results[name].append(time.perf_counter() - t0)
                    calls[name] = out.network_calls
            for e in models_:
                r = results[e.name]
                if isinstance(r, str):
                    emit(e, variant, "sample", batch=batch, sampler=spec.name, status=r)
                else:
                    s = statistics.median(r)
                    emit(e, variant, "sample", batch=batch, sampler=spec.name, network_calls=calls[e.name],
                         s_per_image=s / batch, s_per_batch=s,
                         s_per_image_rounds=" ".join(f"{v / batch:.6g}" for v in r))
    denoisers.clear()
    _cleanup(device)


def run(cfg: Any, bench: BenchConfig, device: torch.device, models: Sequence[str] | None = None,
        on_row: Callable[[list[dict]], None] | None = None) -> Result:
    """The benchmark (:func:`run_bench`) as a :class:`~missingu.task.Result`: its rows, and a record
    of the settings, the device and how many rows failed."""
    tables: dict[str, list[dict[str, Any]]] = {}
    rows = run_bench(cfg, bench, device, models=models, on_row=on_row, tables=tables)
    failed = [r for r in rows if str(r["status"]).startswith("failed")]
    return Result(rows=rows, record={"bench": to_dict(bench), "device_name": rows[0]["device_name"] if rows else None,
                                     "rows": len(rows), "failed": len(failed)},
                  tables={name: tables.get(name, []) for name in ("ops", "curve") if name in bench.parts})
