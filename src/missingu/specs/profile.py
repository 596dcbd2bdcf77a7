"""What ``missingu profile`` measures: its config, its plan of rows and its work
(:mod:`missingu.profile` measures them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import ConfigError, choose, positive
from ..task import Work, format_shape
from .models import ARCHITECTURE_SPECS, CUNetConfig, ModelSpec, compatible
from .samplers import SamplerSpec

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class CountSpec:
    """An architecture preset counted (parameters and FLOPs per call, no timing) at an input shape
    ``[C, H, W]``; a slimmable preset at each of its widths."""

    arch: str
    preset: str
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        entry = choose(ARCHITECTURE_SPECS, self.arch, "architecture", "arch")
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


def work(cfg: Any) -> Work:
    """The profile: one timed measurement of fixed cost (latency, sampling, memory) per full row of
    its plan (every model at every shape it takes; the cU-Net ablations are quick beside them)."""
    return Work(measurements=sum(1 for job in plan(cfg) if job.full))
