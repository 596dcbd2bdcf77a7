"""The experiment config: one YAML file for the CLI and the pipeline alike.

Datasets, models and samplers are lists of named entries; a command picks one entry of
each by name (or the only one). See ``config/README.md`` for every key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from .bench import BenchConfig
from .config import ConfigError, apply_overrides, build, load_yaml, positive, to_dict
from .data import DatasetSpec
from .denoise import DenoiseConfig
from .diffusion import DiffusionConfig
from .evaluate import EvaluateConfig
from .models import ModelSpec, check_image_size
from .profile import ProfileConfig
from .samplers import SamplerSpec
from .speed import SpeedConfig
from .stepaware import StepAwareConfig
from .train import TrainConfig

E = TypeVar("E", DatasetSpec, ModelSpec, SamplerSpec)


@dataclass(frozen=True)
class SampleConfig:
    """How many images ``missingu sample`` draws per (model, sampler), and in what batches."""

    num_samples: int = 64
    batch_size: int = 64

    def __post_init__(self) -> None:
        positive(self.num_samples, "num_samples")
        positive(self.batch_size, "batch_size")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one experiment needs; lists hold named entries."""

    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]
    samplers: tuple[SamplerSpec, ...] = ()
    seed: int = 0
    device: str = "auto"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    stepaware: StepAwareConfig = field(default_factory=StepAwareConfig)

    def __post_init__(self) -> None:
        for key, entries in (("datasets", self.datasets), ("models", self.models), ("samplers", self.samplers),
                             ("profile.samplers", self.profile.samplers)):
            names = [e.name for e in entries]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(f"{key}: names must be unique; {dupes[0]!r} appears twice")
        for key, samplers in (("samplers", self.samplers), ("profile.samplers", self.profile.samplers)):
            for i, spec in enumerate(samplers):
                if spec.kind == "ddim" and spec.steps > self.diffusion.timesteps:
                    raise ConfigError(
                        f"{key}[{i}].steps: DDIM sampler {spec.name!r} asks for {spec.steps} steps; at most "
                        f"diffusion.timesteps ({self.diffusion.timesteps})"
                    )
        if self.denoise.sweep_start is not None and self.denoise.sweep_start >= self.diffusion.timesteps:
            raise ConfigError(
                f"denoise.sweep_start: {self.denoise.sweep_start} is past the last step; at most "
                f"diffusion.timesteps - 1 ({self.diffusion.timesteps - 1})"
            )
        if not self.datasets:
            raise ConfigError("datasets: needs at least one entry")
        self._check_stepaware()
        resolve_device(self.device, check_available=False)
        for data in self.datasets:
            for model in self.models:
                try:
                    check_image_size(model.resolve(), data.size)
                except ConfigError as err:
                    raise ConfigError(f"datasets.{data.name}.{err} (model {model.name!r})") from None

    def _check_stepaware(self) -> None:
        """``stepaware.model`` names a slimmable model, ``mix`` other models, ``sampler`` a DDPM/DDIM sampler."""
        sa = self.stepaware
        if not sa.model:
            return
        names = [m.name for m in self.models]
        spec = next((m for m in self.models if m.name == sa.model), None)
        if spec is None or spec.arch != "ddpm" or len(spec.resolve().widths) < 2:
            slim = [m.name for m in self.models if m.arch == "ddpm" and len(m.resolve().widths) > 1]
            raise ConfigError(f"stepaware.model: {sa.model!r} is not a slimmable model entry (arch ddpm with several "
                              f"widths); allowed: {', '.join(slim) or '(none: add one to models)'}")
        for name in sa.mix:
            if name not in names or name == sa.model:
                raise ConfigError(f"stepaware.mix: {name!r} is not another model entry; allowed: "
                                  f"{', '.join(n for n in names if n != sa.model)}")
        sampler = next((s for s in self.samplers if s.name == sa.sampler), None)
        if sampler is None or sampler.kind not in ("ddpm", "ddim"):
            allowed = [s.name for s in self.samplers if s.kind in ("ddpm", "ddim")]
            raise ConfigError(f"stepaware.sampler: {sa.sampler!r} is not a DDPM or DDIM sampler entry; allowed: "
                              f"{', '.join(allowed) or '(none)'}")

    def dataset(self, name: str | None = None) -> DatasetSpec:
        return _pick(self.datasets, name, "datasets")

    def model(self, name: str | None = None) -> ModelSpec:
        return _pick(self.models, name, "models")

    def sampler(self, name: str | None = None) -> SamplerSpec:
        return _pick(self.samplers, name, "samplers")


def _pick(entries: Sequence[E], name: str | None, key: str) -> E:
    names = [e.name for e in entries]
    if not entries:
        raise ConfigError(f"{key}: the config has no entries")
    if name is None:
        if len(entries) == 1:
            return entries[0]
        raise ConfigError(f"{key}: the config has several entries ({', '.join(names)}); name one")
    for entry in entries:
        if entry.name == name:
            return entry
    raise ConfigError(f"{key}: no entry named {name!r}; allowed: {', '.join(names) or '(none)'}")


def run_meta(cfg: ExperimentConfig, dataset: str | None, model: str | None) -> dict[str, Any]:
    """The plain-data description of a training run (model ``model`` on dataset ``dataset`` of
    ``cfg``), stored in its checkpoints: what a checkpoint is, so a later command can rebuild the
    network and a resume can tell whether the configuration changed."""
    data, spec = cfg.dataset(dataset), cfg.model(model)
    return {
        "model_name": spec.name, "arch": spec.arch, "model": to_dict(spec.resolve()),
        "dataset": data.name, "image_shape": [data.channels, data.size, data.size], "hflip": data.hflip,
        "diffusion": to_dict(cfg.diffusion), "train": to_dict(cfg.train), "seed": cfg.seed,
    }


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override (``key.sub=value``) and validate an experiment config file."""
    data = apply_overrides(load_yaml(path), overrides)
    return parse_experiment(data)


def parse_experiment(data: dict[str, Any]) -> ExperimentConfig:
    """Validate plain config data (as read from YAML)."""
    return build(ExperimentConfig, data, "")


def resolve_device(name: str, check_available: bool = True) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: unknown {name!r}; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if check_available and device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but this torch sees no CUDA device; use auto or cpu")
    return device
