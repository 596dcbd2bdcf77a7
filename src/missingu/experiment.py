"""The experiment config: one YAML file for the CLI and the pipeline alike.

Datasets, models and samplers are lists of named entries; a command picks one entry of
each by name (or the only one). See ``config/README.md`` for every key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import ConfigError, apply_overrides, build, load_yaml, positive, to_dict
from .specs.bench import BenchConfig
from .specs.data import DatasetSpec
from .specs.denoise import DenoiseConfig
from .specs.diffusion import DiffusionConfig
from .specs.evaluate import EvaluateConfig
from .specs.models import ModelSpec, check_image_size
from .specs.profile import ProfileConfig
from .specs.samplers import SamplerSpec, expected_calls
from .specs.speed import SpeedConfig
from .specs.stepaware import StepAwareConfig
from .specs.train import TrainConfig

if TYPE_CHECKING:
    import torch

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
        self._check_matrix()
        self._check_stepaware()
        check_device(self.device)
        for dataset, name in self.runs():
            data, model = self.dataset(dataset), self.model(name)
            try:
                check_image_size(model.resolve(), data.size)
            except ConfigError as err:
                raise ConfigError(f"datasets.{data.name}.{err} (model {model.name!r})") from None

    def _check_matrix(self) -> None:
        """Each model's ``datasets`` and ``samplers`` name entries of the config, its ``train`` keys
        make a valid recipe, and every dataset has a model trained on it."""
        for spec in self.models:
            for key, entries in (("datasets", self.datasets), ("samplers", self.samplers)):
                allowed = [e.name for e in entries]
                unknown = [n for n in getattr(spec, key) or () if n not in allowed]
                if unknown:
                    raise ConfigError(f"models.{spec.name}.{key}: no {key[:-1]} entry named {unknown[0]!r}; "
                                      f"allowed: {', '.join(allowed) or '(none)'}")
            self.train_for(spec.name)
        # (a config without models is a data-only slice: what the pipeline gives prepare-data)
        untrained = [d.name for d in self.datasets if not any(self.trains(m.name, d.name) for m in self.models)]
        if untrained and self.models:
            raise ConfigError(f"datasets.{untrained[0]}: no model is trained on it (models[].datasets); remove "
                              f"the entry or add it to a model's datasets")

    def trains(self, model: str, dataset: str) -> bool:
        """Whether model entry ``model`` is trained on dataset entry ``dataset`` (its ``datasets``)."""
        spec = self.model(model)
        return spec.datasets is None or dataset in spec.datasets

    def samples(self, model: str, sampler: str) -> bool:
        """Whether model entry ``model`` is sampled with sampler entry ``sampler`` (its ``samplers``)."""
        spec = self.model(model)
        return spec.samplers is None or sampler in spec.samplers

    def runs(self) -> list[tuple[str, str]]:
        """The experiment matrix: every ``(dataset, model)`` trained, datasets in config order."""
        return [(d.name, m.name) for d in self.datasets for m in self.models if self.trains(m.name, d.name)]

    def sampled(self) -> list[tuple[str, str, str]]:
        """Every ``(dataset, model, sampler)`` drawn: a trained pair with each sampler of the model."""
        return [(d, m, s.name) for d, m in self.runs() for s in self.samplers if self.samples(m, s.name)]

    def matrix(self, keys: Sequence[str]) -> list[dict[str, str]]:
        """The distinct combinations of ``keys`` (a subset of dataset, model, sampler, in that
        order) that the experiment runs, as dicts: what the pipeline expands its paths over."""
        allowed = ("dataset", "model", "sampler")
        if not set(keys) <= set(allowed):
            raise ValueError(f"matrix keys: {list(keys)!r}; allowed: {', '.join(allowed)}")
        rows = ([dict(zip(allowed, row)) for row in self.sampled()] if "sampler" in keys
                else [dict(zip(allowed, row)) for row in self.runs()])
        out: list[dict[str, str]] = []
        for row in rows:
            picked = {k: row[k] for k in allowed if k in keys}
            if picked not in out:
                out.append(picked)
        return out

    def train_for(self, model: str) -> TrainConfig:
        """Model entry ``model``'s training recipe: the ``train`` section with its own ``train``
        keys on top."""
        spec = self.model(model)
        if not spec.train:
            return self.train
        return build(TrainConfig, {**to_dict(self.train), **spec.train}, f"models.{spec.name}.train")

    def stepaware_datasets(self) -> list[str]:
        """The datasets some step-aware study runs on: those its slimmable model is trained on."""
        return list(dict.fromkeys(d for d, _ in self.stepaware_runs()))

    def stepaware_runs(self) -> list[tuple[str, str]]:
        """(dataset, study name) of every step-aware study (``stepaware.studies`` too) on every
        dataset its slimmable model is trained on."""
        if not self.stepaware.model:
            return []
        return [(d, sa.name) for sa in self.stepaware.each() for d, m in self.runs() if m == sa.model]

    def study(self, name: str | None = None) -> StepAwareConfig:
        """The step-aware study ``name`` (``None``: the section's own)."""
        return self.stepaware.each()[0] if name is None else self.stepaware.study(name)

    def _check_stepaware(self) -> None:
        """Each study: ``model`` names a slimmable model, ``mix`` other models trained where it is,
        ``sampler`` a DDPM/DDIM sampler."""
        if not self.stepaware.model:
            return
        for sa in self.stepaware.each():
            key = "stepaware" if sa.name == self.stepaware.name else f"stepaware.studies.{sa.name}"
            self._check_study(sa, key)

    def _check_study(self, sa: StepAwareConfig, key: str) -> None:
        names = [m.name for m in self.models]
        spec = next((m for m in self.models if m.name == sa.model), None)
        if spec is None or spec.arch != "ddpm" or len(spec.resolve().widths) < 2:
            slim = [m.name for m in self.models if m.arch == "ddpm" and len(m.resolve().widths) > 1]
            raise ConfigError(f"{key}.model: {sa.model!r} is not a slimmable model entry (arch ddpm with several "
                              f"widths); allowed: {', '.join(slim) or '(none: add one to models)'}")
        datasets = [d for d, m in self.runs() if m == sa.model]
        for name in sa.mix:
            if name not in names or name == sa.model:
                raise ConfigError(f"{key}.mix: {name!r} is not another model entry; allowed: "
                                  f"{', '.join(n for n in names if n != sa.model)}")
            missing = [d for d in datasets if not self.trains(name, d)]
            if missing:
                raise ConfigError(f"{key}.mix: {name!r} is not trained on {missing[0]!r}, where {key}.model "
                                  f"{sa.model!r} is (add it to models.{name}.datasets, or leave {name!r} out of mix)")
        sampler = next((s for s in self.samplers if s.name == sa.sampler), None)
        if sampler is None or sampler.kind not in ("ddpm", "ddim"):
            allowed = [s.name for s in self.samplers if s.kind in ("ddpm", "ddim")]
            raise ConfigError(f"{key}.sampler: {sa.sampler!r} is not a DDPM or DDIM sampler entry; allowed: "
                              f"{', '.join(allowed) or '(none)'}")
        self._check_stepaware_search(sa, key, spec.resolve().widths, sampler)

    def _check_stepaware_search(self, sa: StepAwareConfig, key: str, widths: Sequence[float],
                                sampler: SamplerSpec) -> None:
        """The ddsm search's first population holds every network alone; the importance sweep's
        networks are narrower widths or mixed-in models, its windows at most the visited steps."""
        from .search import check_population

        check_population(sa.objective, len(widths) + len(sa.mix), sa.population, key)
        if not sa.importance.enabled:
            return
        allowed = sa.smaller_networks(widths)
        for network in sa.importance.networks or ():
            if network not in allowed:
                raise ConfigError(f"{key}.importance.networks: {network!r} is neither a narrower width of "
                                  f"{sa.model!r} nor a {key}.mix model; allowed: "
                                  f"{', '.join(map(str, allowed)) or '(none)'}")
        visited = expected_calls(sampler, self.diffusion.timesteps)  # the DDPM/DDIM sampler's visited steps
        if sa.importance.windows > visited:
            raise ConfigError(f"{key}.importance.windows: {sa.importance.windows} windows over the "
                              f"{visited} steps {sa.sampler!r} visits; allowed: 1 to {visited}")

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
    if not cfg.trains(spec.name, data.name):
        raise ConfigError(f"models.{spec.name}.datasets: {list(spec.datasets or ())!r} does not list {data.name!r}; "
                          f"this model is not trained on it in this experiment")
    return {
        "model_name": spec.name, "arch": spec.arch, "model": to_dict(spec.resolve()),
        "dataset": data.name, "image_shape": [data.channels, data.size, data.size], "hflip": data.hflip,
        "diffusion": to_dict(cfg.diffusion), "train": to_dict(cfg.train_for(spec.name)), "seed": cfg.seed,
    }


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override (``key.sub=value``) and validate an experiment config file."""
    data = apply_overrides(load_yaml(path), overrides)
    return parse_experiment(data)


def parse_experiment(data: dict[str, Any]) -> ExperimentConfig:
    """Validate plain config data (as read from YAML)."""
    return build(ExperimentConfig, data, "")


DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")  # the schema's device pattern (tested)


def check_device(name: str) -> None:
    """A ``device`` key names ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (checked without torch)."""
    if not (isinstance(name, str) and DEVICE.fullmatch(name)):
        raise ConfigError(f"device: unknown {name!r}; allowed: auto, cpu, cuda, cuda:N, mps")


def resolve_device(name: str, check_available: bool = True) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise that torch device."""
    import torch  # here: the experiment is read (the Snakefile's parse, `missingu plan`) without torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if check_available and device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but this torch sees no CUDA device; use auto or cpu")
    return device
