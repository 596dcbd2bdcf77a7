"""The step-aware study's config (one section, named studies on top), the files it writes and
its work (:mod:`missingu.stepaware` runs it)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, build, choose, positive, to_dict
from ..search import OBJECTIVES
from ..task import Work, image_values
from .samplers import SamplerSpec, expected_calls

if TYPE_CHECKING:
    from ..strategies import Choice


@dataclass(frozen=True)
class ImportanceConfig:
    """``stepaware.importance``: ``enabled`` (off by default; ``importance: null`` is off too),
    ``windows`` consecutive windows the visited steps are cut into (as equal as possible; each
    visited step in exactly one), ``networks`` the smaller networks put in each window (widths as
    numbers, mixed-in models by name; ``null``: every width but the full one and every
    ``stepaware.mix`` model). Cost: ``windows x networks`` strategies of ``eval_samples`` images."""

    enabled: bool = False
    windows: int = 10
    networks: tuple[float | str, ...] | None = None

    def __post_init__(self) -> None:
        positive(self.windows, "windows")
        if self.networks is not None and not self.networks:
            raise ConfigError("networks: empty; name at least one network, null for all, or set enabled: false")


QUALITIES = {"classifier": "classifier", "fid": "fid"}
STUDY_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Files `missingu stepaware` writes beside its table (missingu.io.sidecars).
SIDECARS = {"history": ".history.csv", "strategies": ".strategies.json", "strategy": ".strategy.yaml",
            "features": ".features.pt", "record": ".json", "importance": ".importance.csv"}


@dataclass(frozen=True)
class StepAwareConfig:
    """The step-aware study (``missingu stepaware``): ``model`` a slimmable model entry (empty: no
    study), ``mix`` other model entries a strategy may also use, ``sampler`` the DDPM/DDIM sampler
    entry, ``quality`` the measure (``classifier``: the classifier Frechet distance; ``fid``: FID,
    needs the Inception weights), ``samples`` images per evaluated strategy (in batches of
    ``batch_size``), the search (``objective``: ``single``, ``pareto`` or ``ddsm``, see
    :mod:`missingu.search`; ``population``, ``generations``, ``block`` visited steps per gene,
    ``flops_weight`` per mean GFLOPs, ``mutation`` the per-gene reset probability, ``null``:
    min(0.5, 1 / genes)), ``random_baselines`` random strategies at the searched strategy's FLOPs,
    ``low_noise_fraction`` of the steps (the least noisy) that the hand-made baseline gives the
    full width, ``eval_samples`` fresh samples (``null``: ``samples``) every final strategy is
    re-evaluated on after the search, and ``importance`` the step-importance sweep.

    ``name`` names this study (its results' folder name); ``studies`` adds further named studies,
    each this section with its own keys on top (``{mixed: {mix: [cunet]}}``), see :meth:`each`."""

    model: str = ""
    mix: tuple[str, ...] = ()
    sampler: str = ""
    quality: str = "classifier"
    samples: int = 64
    batch_size: int = 64
    objective: str = "single"
    population: int = 8
    generations: int = 4
    block: int = 1
    flops_weight: float = 0.5
    mutation: float | None = None
    random_baselines: int = 3
    low_noise_fraction: float = 0.3
    seed: int = 0
    eval_samples: int | None = None
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    name: str = "main"
    studies: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # keys relative to the section: config.build prefixes it
        for key, name in (("name", self.name), *((f"studies.{n}", n) for n in self.studies)):
            if not STUDY_NAME.fullmatch(str(name)):
                raise ConfigError(f"{key}: study name {name!r} must be letters, digits, '_' or '-' (it names files)")
        if self.name in self.studies:
            raise ConfigError(f"studies.{self.name}: the name of this section's own study (name: {self.name!r})")
        for name, keys in self.studies.items():
            if not isinstance(keys, Mapping):
                raise ConfigError(f"studies.{name}: expected a mapping of keys of this section, got {keys!r}")
            nested = sorted({"name", "studies"} & set(keys))
            if nested:
                raise ConfigError(f"studies.{name}.{nested[0]}: not allowed in a study (its name is its key, and "
                                  f"studies do not nest)")
        if self.studies:
            self.each()  # each study's keys checked here, named studies.<name>.<key>
        choose(OBJECTIVES, self.objective, "objective", "objective")
        choose(QUALITIES, self.quality, "quality measure", "quality")
        for key in ("samples", "batch_size", "population", "generations", "block", "random_baselines"):
            positive(getattr(self, key), key)
        if self.eval_samples is not None:
            positive(self.eval_samples, "eval_samples")
        if self.flops_weight < 0:
            raise ConfigError(f"flops_weight: must be zero or positive, got {self.flops_weight}")
        if self.mutation is not None and not 0 <= self.mutation <= 1:
            raise ConfigError(f"mutation: a probability per gene, in [0, 1] (null: min(0.5, 1 / genes)), "
                              f"got {self.mutation}")
        if not 0 < self.low_noise_fraction < 1:
            raise ConfigError(f"low_noise_fraction: must lie in (0, 1), got {self.low_noise_fraction}")

    def each(self) -> list[StepAwareConfig]:
        """Every study of the section: this one (``name``), then each of ``studies``, built as this
        section with the study's keys on top (validated like the section; a key is named
        ``studies.<name>.<key>``)."""
        if not self.studies:
            return [self]
        base = {k: v for k, v in to_dict(self).items() if k not in ("name", "studies")}
        return [dataclasses.replace(self, studies={}),
                *(build(StepAwareConfig, {**base, **keys, "name": name}, f"studies.{name}")
                  for name, keys in self.studies.items())]

    def study(self, name: str) -> StepAwareConfig:
        """The study called ``name`` (see :meth:`each`)."""
        found = {sa.name: sa for sa in self.each()}
        if name not in found:
            raise ConfigError(f"stepaware study {name!r} is not in the config; allowed: {', '.join(found)}")
        return found[name]

    def smaller_networks(self, widths: Sequence[float]) -> list[Choice]:
        """Every network but the full width: each narrower width of ``widths``, then every ``mix``
        model (what the importance sweep may put in a window, and puts there by default)."""
        return [float(w) for w in widths if w != max(widths)] + list(self.mix)

    def importance_networks(self, widths: Sequence[float]) -> list[Choice]:
        """The networks the importance sweep puts in each window: ``importance.networks``, or
        (``null``) :meth:`smaller_networks`."""
        if self.importance.networks is not None:
            return list(self.importance.networks)
        return self.smaller_networks(widths)


def work(
    config: StepAwareConfig, spec: SamplerSpec, timesteps: int, networks: int, shape: tuple[int, int, int]
) -> Work:
    """The study: every strategy it scores (each of ``networks`` alone, the hand-made rule, at most
    ``population x generations`` search candidates, the random baselines) draws ``samples`` images
    through every network call of the sampler; the final ones (the baselines, the searched one,
    the random ones) and, when on, the importance sweep's ``windows x`` its networks (``null``:
    every network but the full width) draw ``eval_samples`` more."""
    calls = expected_calls(spec, timesteps) or 0  # DDPM or DDIM (the experiment checks): its visited steps
    strategies = networks + 1 + config.population * config.generations + config.random_baselines
    finals = networks + 2 + config.random_baselines
    imp = config.importance
    if imp.enabled:
        finals += min(imp.windows, calls) * (networks - 1 if imp.networks is None else len(imp.networks))
    fresh = finals * (config.eval_samples or config.samples)
    return Work(forward_values=float((strategies * config.samples + fresh) * calls * image_values(shape)))
