"""The efficiency profile (``missingu profile``): parameters, FLOPs, ODE evaluations, latency,
sampling time and training memory of every model at every input shape, cU-Net ablations beside.

A profile is a list of jobs, one per (input shape, model, variant). Each measured row is
appended at once to a journal (``<out>.partial.jsonl``, one JSON line per row with a key that
hashes everything the row depends on: model config, shape, profile settings, trained weights,
device, torch and package version). A run cut short keeps its rows; run again, it measures only
the jobs whose key is not in the journal. ``models`` and ``shapes`` restrict a run to part of
the profile, and ``merge`` keeps the rows of an earlier part in the same CSV. The measurements
themselves are :mod:`missingu.measure`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import ConfigError, choose, positive, to_dict
from .diffusion import Diffusion
from .io import InputFileError, atomic_open
from .measure import (
    call_latencies,
    count_parameters,
    environment,
    format_shape,
    measure_call,
    sample_latency,
    train_step_memory,
    weights_fit,
)
from .models import CUNetConfig, build_model, compatible
from .samplers import SamplerSpec, expected_calls
from .snapshot import load_snapshot
from .task import Result, Work

log = logging.getLogger(__name__)

Shape = tuple[int, int, int]
Row = dict[str, Any]
ROW_IDENTITY = ("device_name", "dataset", "model", "variant", "shape")  # a row measured again replaces this one


@dataclass(frozen=True)
class CountSpec:
    """An architecture preset counted (parameters and FLOPs per call, no timing) at an input shape
    ``[C, H, W]``; a slimmable preset at each of its widths."""

    arch: str
    preset: str
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        from .models import ARCHITECTURES

        entry = choose(ARCHITECTURES, self.arch, "architecture", "arch")
        choose(entry.presets, self.preset, f"{self.arch} preset", "preset")
        if len(self.shape) != 3:
            raise ConfigError(f"shape: {list(self.shape)} is not [C, H, W]")
        for v in self.shape:
            positive(v, "shape")


# The papers' own architectures at the papers' shapes (the Missing U's MNIST 32x32x1 and CelebA /
# LSUN 64x64x3; DDSM's CIFAR-10 32x32x3): counted in every profile, so the architecture claims are
# answered in their own setting on any machine, with no training.
PAPER_COUNTS = (
    CountSpec("unet", "paper", (3, 64, 64)), CountSpec("cunet", "paper", (3, 64, 64)),
    CountSpec("cunet", "draft", (3, 64, 64)), CountSpec("unet", "paper", (1, 32, 32)),
    CountSpec("cunet", "paper", (1, 32, 32)), CountSpec("ddpm", "ddsm", (3, 32, 32)),
)


@dataclass(frozen=True)
class ProfileConfig:
    """What ``missingu profile`` measures. ``shapes`` are extra (C, H, W) inputs besides each
    dataset's; ``batch_sizes`` for per-call latency (each repeat's time kept, for intervals);
    ``sample_batch`` images for full-sample latency with each of ``samplers``; ``memory_batch``
    for training-step memory; ``ablations`` adds cU-Net variants (parameters, FLOPs, NFE and
    latency at the first batch size); ``counts`` architecture presets counted at given shapes
    (parameters and FLOPs only: the papers' own architectures by default)."""

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
    counts: tuple[CountSpec, ...] = PAPER_COUNTS

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
    count_only: bool = False,
    width: float | None = None,
) -> dict[str, Any]:
    """One row of measurements for a model config at an input shape. ``state_dict`` is loaded
    when its names and shapes fit the model (an ablation variant with other layers keeps its
    initial weights; the row's ``weights`` column says which). ``full=False`` (ablation rows)
    skips sampling, memory and all but the first batch size; ``count_only`` measures parameters
    and FLOPs alone (a slimmable model at ``width``). Latency columns hold the median of the
    repeats, and ``latency_repeats_ms_b<batch>`` every repeat's time (space-separated)."""
    model = build_model(arch, config, shape[0], shape[1]).to(device)
    trained = state_dict is not None and weights_fit(model, state_dict)
    if trained:
        model.load_state_dict(state_dict)
    if width is not None:
        model.width = width
    cost = measure_call(model, shape)
    row: dict[str, Any] = {
        "shape": format_shape(shape),
        "weights": "trained" if trained else "init",
        "params_total": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "flops_per_call": cost.flops, "macs_per_call": int(cost.macs), "ode_evals_per_call": cost.nfe,
    }
    if count_only:
        return row
    for batch in cfg.batch_sizes if full else cfg.batch_sizes[:1]:
        times = call_latencies(model, shape, batch, cfg.warmup, cfg.repeats)
        seconds = statistics.median(times)
        row[f"latency_ms_b{batch}"] = seconds * 1000
        row[f"images_per_s_b{batch}"] = batch / seconds
        row[f"latency_repeats_ms_b{batch}"] = " ".join(f"{t * 1000:.6g}" for t in times)
    if not full:
        return row
    diffusion = (diffusion or Diffusion()).to(device)
    for spec in cfg.samplers:
        seconds, calls, evals = sample_latency(model, diffusion, spec, shape, cfg.sample_batch)
        row[f"sample_s_{spec.name}"] = seconds
        row[f"sample_calls_{spec.name}"] = calls
        row[f"sample_adaptive_{spec.name}"] = expected_calls(spec, diffusion.timesteps) is None
    row["train_step_mib"] = train_step_memory(arch, config, shape, cfg.memory_batch, device)
    if isinstance(config, CUNetConfig):
        adjoint = replace(config, adjoint=not config.adjoint)
        key = "train_step_mib_adjoint" if not config.adjoint else "train_step_mib_no_adjoint"
        row[key] = train_step_memory(arch, adjoint, shape, cfg.memory_batch, device)
    return row



@dataclass(frozen=True)
class ProfileJob:
    """One row to measure: a model (or a cU-Net ablation ``variant``) at an input shape, with
    trained weights from ``checkpoint`` where the pipeline has them."""

    dataset: str  # "" for the extra ``profile.shapes``
    model: str
    arch: str
    preset: str
    variant: str
    config: Any
    shape: Shape
    full: bool
    checkpoint: Path | None
    count_only: bool = False
    width: float | None = None

    def describe(self) -> str:
        return f"{self.model} {self.variant} {format_shape(self.shape)}"


def plan(
    cfg: Any,
    checkpoints: dict[tuple[str, str], Path] | None = None,
    models: Sequence[str] | None = None,
    shapes: Sequence[Shape] | None = None,
) -> list[ProfileJob]:
    """The jobs of a profile: every model at the shape of each dataset it is trained on (the
    experiment's matrix; its trained weights where ``checkpoints`` has them) and at every
    ``profile.shapes`` entry it can take, then its cU-Net ablations (``profile.ablations``).
    ``models`` and ``shapes`` keep only those (unknown names or shapes raise ``ConfigError``)."""
    checkpoints = checkpoints or {}
    every: dict[Shape, list[str]] = {}  # shape -> the datasets of that shape ([] for profile.shapes alone)
    for data in cfg.datasets:
        every.setdefault((data.channels, data.size, data.size), []).append(data.name)
    extra = {tuple(shape) for shape in cfg.profile.shapes}
    for shape in cfg.profile.shapes:
        every.setdefault(tuple(shape), [])
    if shapes is not None:
        unknown = [format_shape(s) for s in shapes if tuple(s) not in every]
        if unknown:
            raise ConfigError(f"--shapes: {unknown[0]} is not profiled by this config; allowed: "
                              f"{', '.join(map(format_shape, every))} (add it to profile.shapes)")
        every = {s: d for s, d in every.items() if s in set(map(tuple, shapes))}
    specs = [cfg.model(name) for name in models] if models is not None else list(cfg.models)
    jobs = []
    for shape, datasets in every.items():
        for spec in specs:
            config = spec.resolve()
            dataset = next((d for d in datasets if cfg.trains(spec.name, d)), "")
            if not compatible(config, shape) or not (dataset or shape in extra):
                continue
            path = checkpoints.get((dataset, spec.name)) if dataset else None
            common = dict(dataset=dataset, model=spec.name, arch=spec.arch, preset=spec.preset, shape=shape,
                          checkpoint=path)
            jobs.append(ProfileJob(variant="base", config=config, full=True, **common))
            if cfg.profile.ablations and isinstance(config, CUNetConfig):
                jobs += [ProfileJob(variant=name, config=variant, full=False, **common)
                         for name, variant in cunet_ablations(config).items() if variant != config]
    if models is None:
        jobs += [job for job in count_jobs(cfg.profile.counts) if shapes is None or job.shape in every]
    return jobs


def count_jobs(counts: Sequence[CountSpec]) -> list[ProfileJob]:
    """The ``count`` rows (parameters and FLOPs, no timing) of ``profile.counts``: model
    ``<arch>:<preset>`` (and ``@w<width>`` for each width of a slimmable preset)."""
    from .models import ModelSpec

    jobs = []
    for spec in counts:
        config = ModelSpec(f"{spec.arch}-{spec.preset}", spec.arch, spec.preset).resolve()
        shape = tuple(spec.shape)
        widths = [None] if len(getattr(config, "widths", ()) or ()) < 2 else list(config.widths)
        for width in widths:
            name = f"{spec.arch}:{spec.preset}" + ("" if width is None else f"@w{width:g}")
            jobs.append(ProfileJob(dataset="", model=name, arch=spec.arch, preset=spec.preset, variant="count",
                                   config=config, shape=shape, full=False, checkpoint=None, count_only=True,
                                   width=width))
    return jobs


def check_checkpoints(cfg: Any, checkpoints: dict[tuple[str, str], Path]) -> None:
    """Each ``--checkpoint DATASET/MODEL=PATH`` must be a snapshot of that model as configured,
    trained at that dataset's shape; otherwise ``InputFileError`` names the file and the mismatch."""
    for (dataset, model), path in checkpoints.items():
        data, spec = cfg.dataset(dataset), cfg.model(model)
        meta = load_snapshot(path)["meta"]
        want = {"arch": spec.arch, "model": to_dict(spec.resolve()),
                "image_shape": [data.channels, data.size, data.size]}
        for key, value in want.items():
            if meta.get(key) != value:
                raise InputFileError(
                    f"--checkpoint {dataset}/{model}={path}: its {key} is {meta.get(key)!r}; the config's "
                    f"model {model!r} on {dataset!r} needs {value!r}"
                )


def job_key(job: ProfileJob, cfg: Any, env: Row) -> str:
    """A hash of everything a row depends on (a changed checkpoint file changes it too)."""
    settings = {k: v for k, v in to_dict(cfg.profile).items() if k not in ("shapes", "ablations")}
    checkpoint = None
    if job.checkpoint is not None:
        stat = Path(job.checkpoint).stat()
        checkpoint = [str(job.checkpoint), stat.st_size, stat.st_mtime_ns]
    data = {"job": [job.dataset, job.model, job.arch, job.preset, job.variant, to_dict(job.config),
                    list(job.shape), job.full],
            "checkpoint": checkpoint, "profile": settings, "diffusion": to_dict(cfg.diffusion), "env": env,
            "version": __version__}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def journal_path(out: str | Path) -> Path:
    """Where the rows of a profile written to ``out`` are kept while it runs."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _read_journal(path: Path, wanted: set[str]) -> dict[str, Row]:
    """Rows of ``path`` whose key is wanted; a line cut short by a kill is skipped."""
    rows: dict[str, Row] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("key") in wanted:
            rows[entry["key"]] = entry["row"]
    return rows


def run_profile(
    cfg: Any,
    device: Any,
    jobs: Sequence[ProfileJob],
    journal: Path,
    on_row: Callable[[list[Row]], None] | None = None,
    progress: bool = False,
) -> list[Row]:
    """Measure ``jobs`` in order, appending each row to ``journal`` as soon as it is measured;
    rows already in the journal with the same key are reused, not measured again.
    ``on_row(rows_so_far)`` is called after each row."""
    from tqdm import tqdm

    env = environment(device)
    keys = [job_key(job, cfg, env) for job in jobs]
    done = _read_journal(journal, set(keys))
    if done:
        log.info("reusing %d of %d rows measured by an earlier run (%s)", len(done), len(jobs), journal)
    with atomic_open(journal) as fh:  # keep only the rows of this profile
        fh.writelines(json.dumps({"key": k, "row": r}) + "\n" for k, r in done.items())
    diffusion = Diffusion(cfg.diffusion)
    states: dict[Path, dict] = {}
    rows: list[Row] = []
    with open(journal, "a") as fh:
        for i, (job, key) in enumerate(zip(tqdm(jobs, desc="profile", disable=not progress), keys)):
            if key in done:
                row = done[key]
            else:
                t0 = time.perf_counter()
                state = None
                if job.checkpoint is not None:
                    if job.checkpoint not in states:
                        states[job.checkpoint] = load_snapshot(job.checkpoint)["state_dict"]
                    state = states[job.checkpoint]
                measured = profile_model(job.arch, job.config, job.shape, cfg.profile, device, state_dict=state,
                                         diffusion=diffusion, full=job.full, count_only=job.count_only,
                                         width=job.width)
                row = {**env, "dataset": job.dataset, "model": job.model, "arch": job.arch, "preset": job.preset,
                       "variant": job.variant, **({} if job.width is None else {"width": job.width}), **measured}
                fh.write(json.dumps({"key": key, "row": row}) + "\n")
                fh.flush()
                log.info("profile %d/%d: %s (%.1f s)", i + 1, len(jobs), job.describe(), time.perf_counter() - t0)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def merge_rows(earlier: Sequence[Row], rows: Sequence[Row]) -> list[Row]:
    """``earlier`` rows that ``rows`` does not measure again (same device, dataset, model,
    variant and shape), followed by ``rows``."""
    def identity(row: Row) -> tuple:
        return tuple(str(row.get(k, "")) for k in ROW_IDENTITY)

    measured = {identity(r) for r in rows}
    return [r for r in earlier if identity(r) not in measured] + list(rows)


def run(cfg: Any, device: Any, jobs: Sequence[ProfileJob], journal: Path, *, earlier: Sequence[Row] = (),
        on_row: Callable[[list[Row]], None] | None = None, progress: bool = False) -> Result:
    """The profile (:func:`run_profile`) as a :class:`~missingu.task.Result`: rows = the ``earlier``
    rows it does not measure again followed by this run's (:func:`merge_rows`); ``on_row`` gets
    the merged rows so far. The record counts both."""
    rows = run_profile(cfg, device, jobs, journal, progress=progress,
                       on_row=None if on_row is None else (lambda so_far: on_row(merge_rows(earlier, so_far))))
    merged = merge_rows(earlier, rows)
    return Result(rows=merged, record={"measured": len(rows), "kept": len(merged) - len(rows),
                                       "device_name": rows[0]["device_name"] if rows else None})


def work(cfg: Any) -> Work:
    """The profile: one timed measurement of fixed cost (latency, sampling, memory) per full row of
    its plan (every model at every shape it takes; the cU-Net ablations are quick beside them)."""
    return Work(measurements=sum(1 for job in plan(cfg) if job.full))
