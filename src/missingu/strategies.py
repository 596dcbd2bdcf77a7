"""Step-aware strategies (DDSM, Yang et al. 2024): a network per diffusion step.

A **strategy** names, for every diffusion step ``t = 0 .. T-1``, the network that serves it:
a width of the slimmable model (a number: ``0.5``) or the name of another trained model
(``cunet``). Saved as YAML or JSON::

    timesteps: 1000
    steps: [1.0, 1.0, ..., 0.5]      # steps[t]: the network of step t (t = 0: the last, least noisy)
    source: where it comes from      # optional, free text (comments are fine too)

Published strategies live in ``config/strategies/`` of the repository (DDSM's CIFAR-10 one:
``ddsm_cifar10.yaml``); :func:`published` lists those that fit a model and a step count.

:class:`StepAwareDenoiser` is a denoiser ``f(x_t, t)`` that calls the network of step ``t``, so the
ordinary DDPM and DDIM samplers run a strategy unchanged (every sample of a batch is at the same
step there). A strategy's cost is computed from measured per-call FLOPs of each network, summed
over the steps the sampler visits; its mean is per network call. Shared by ``missingu sample
--strategy`` and the step-aware study (:mod:`missingu.stepaware`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .config import ConfigError
from .io import InputFileError, atomic_open, save_yaml
from .samplers import ddim_timesteps

Choice = float | str
# The keys of a strategy file.
FILE_KEYS = ("timesteps", "steps", "source")
# The published strategies: one file each (its name is the strategy's), in the repository's config.
PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "config" / "strategies"
log = logging.getLogger("missingu")


def parse_choice(value: Any) -> Choice:
    """A strategy entry: a number (a width of the slimmable model) or a model name."""
    if isinstance(value, bool):
        raise ConfigError(f"strategy entry {value!r}: a width (number) or a model name")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    raise ConfigError(f"strategy entry {value!r}: a width (number) or a model name")


def label(choice: Choice) -> str:
    """``0.5`` -> ``"w0.5"``; a model name stays itself."""
    return f"w{choice:g}" if isinstance(choice, float) else choice


@dataclass(frozen=True)
class Strategy:
    """``steps[t]``: the network of diffusion step ``t``."""

    steps: tuple[Choice, ...]

    @classmethod
    def uniform(cls, choice: Choice, timesteps: int) -> Strategy:
        return cls((parse_choice(choice),) * timesteps)

    @classmethod
    def from_visited(cls, visited: Sequence[int], choices: Sequence[Choice], timesteps: int) -> Strategy:
        """The strategy whose visited step ``visited[i]`` uses ``choices[i]``; every other step
        takes the choice of the nearest visited step at or below it (above it for steps below the
        last visited one), so the file always has one entry per step."""
        if len(visited) != len(choices):
            raise ValueError("one choice per visited step")
        order = sorted(zip(visited, choices))
        steps: list[Choice] = []
        j = 0
        for t in range(timesteps):
            while j + 1 < len(order) and order[j + 1][0] <= t:
                j += 1
            steps.append(order[j][1])
        return cls(tuple(steps))

    def networks(self) -> list[Choice]:
        """The distinct networks, in order of first use."""
        return list(dict.fromkeys(self.steps))

    def to_data(self) -> dict[str, Any]:
        return {"timesteps": len(self.steps), "steps": list(self.steps)}

    def save(self, path: str | Path) -> None:
        """Write the strategy as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            save_yaml(self.to_data(), path)
            return
        with atomic_open(path, "w") as fh:
            fh.write(json.dumps(self.to_data()))

    @classmethod
    def load(cls, path: str | Path) -> Strategy:
        """Read a strategy file; a file that is not one raises ``InputFileError`` naming it."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise InputFileError(f"strategy {path}: cannot read it ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise InputFileError(f"strategy {path}: needs a 'steps' list (one network per diffusion step)")
        unknown = sorted(set(data) - set(FILE_KEYS))
        if unknown:
            raise InputFileError(f"strategy {path}: unknown key {unknown[0]!r}; allowed: {', '.join(FILE_KEYS)}")
        if not isinstance(data.get("source", ""), str):
            raise InputFileError(f"strategy {path}: 'source' is free text, got {data['source']!r}")
        steps = tuple(parse_choice(v) for v in data["steps"])
        if "timesteps" in data and data["timesteps"] != len(steps):
            raise InputFileError(f"strategy {path}: says timesteps {data['timesteps']} but lists {len(steps)} steps")
        return cls(steps)


def published(timesteps: int, choices: Sequence[Choice],
              sources: str | Path | Sequence[str | Path] = PUBLISHED_DIR) -> dict[str, Strategy]:
    """The published strategies (by file stem, in name order) a study of ``timesteps`` diffusion
    steps over the networks ``choices`` (widths, model names) can run: those with one entry per
    step whose every network is among ``choices`` (what :func:`validate` asks). ``sources``: strategy
    files, or folders whose every ``*.yaml`` is one. DDSM's CIFAR-10 strategy (``ddsm_cifar10``)
    fits 1,000 steps and widths 1 / 0.75 / 0.5 / 0.25. A missing folder (an installed package
    without the repository) gives none, with a warning."""
    files: list[Path] = []
    for source in [sources] if isinstance(sources, (str, Path)) else sources:
        source = Path(source)
        if source.is_dir():
            files += source.glob("*.yaml")
        elif source.is_file():
            files.append(source)
        else:
            log.warning("published strategies: %s does not exist; none are read from it", source)
    allowed = {parse_choice(c) for c in choices}
    found = {}
    for path in sorted(files, key=lambda f: f.stem):
        strategy = Strategy.load(path)
        if len(strategy.steps) == timesteps and set(strategy.steps) <= allowed:
            found[path.stem] = strategy
    return found


def validate(strategy: Strategy, timesteps: int, allowed: Sequence[Choice],
             output_shapes: Mapping[Choice, tuple[int, ...]] | None = None) -> None:
    """Refuse, before any sampling, a strategy of the wrong length, one that names a network that
    is not there, or one that mixes networks whose outputs differ in shape."""
    if len(strategy.steps) != timesteps:
        raise ConfigError(f"strategy: {len(strategy.steps)} entries; needs one per diffusion step "
                          f"(diffusion.timesteps = {timesteps})")
    names = ", ".join(map(str, allowed))
    for t, choice in enumerate(strategy.steps):
        if choice not in allowed:
            raise ConfigError(f"strategy.steps[{t}]: unknown network {choice!r}; allowed: {names}")
    if output_shapes is not None:
        used = {c: output_shapes[c] for c in strategy.networks()}
        if len(set(used.values())) > 1:
            detail = ", ".join(f"{c}: {list(s)}" for c, s in used.items())
            raise ConfigError(f"strategy: its networks' outputs differ in shape ({detail}); a step-aware sampler "
                              f"needs networks of one input and output shape")


class StepAwareDenoiser:
    """``f(x_t, t)`` computed by the network ``strategy`` assigns to step ``t``.

    ``networks`` maps each choice to a callable; widths of a slimmable model are served by setting
    its width before the call. Every sample of a batch must be at the same step (DDPM, DDIM)."""

    def __init__(self, strategy: Strategy, networks: Mapping[Choice, Callable[[Tensor, Tensor], Tensor]],
                 slimmable: nn.Module | None = None):
        self.strategy, self.networks, self.slimmable = strategy, dict(networks), slimmable
        self.calls: dict[Choice, int] = {c: 0 for c in self.networks}

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        step = int(t[0])
        choice = self.strategy.steps[step]
        self.calls[choice] += 1
        if isinstance(choice, float) and self.slimmable is not None:
            self.slimmable.width = choice
        return self.networks[choice](x, t)


def visited_steps(kind: str, timesteps: int, steps: int) -> list[int]:
    """The diffusion steps a DDPM (all) or DDIM (``steps`` of them) sampler calls the network at,
    in the order it does."""

    if kind == "ddpm":
        return list(range(timesteps - 1, -1, -1))
    if kind == "ddim":
        return ddim_timesteps(timesteps, min(steps, timesteps))
    raise ConfigError(f"step-aware sampling: sampler kind {kind!r} is not supported; allowed: ddpm, ddim "
                      f"(the probability-flow ODE moves every sample at its own pace)")


def strategy_flops(strategy: Strategy, flops: Mapping[Choice, int], visited: Sequence[int]) -> tuple[int, float]:
    """Total FLOPs of one sample's network calls under ``strategy`` and their mean per call,
    from the measured per-call FLOPs of each network."""
    total = sum(flops[strategy.steps[t]] for t in visited)
    return total, total / len(visited)


@torch.no_grad()
def output_shape(network: Callable[[Tensor, Tensor], Tensor], shape: Sequence[int],
                 device: torch.device | str = "cpu") -> tuple[int, ...]:
    """The per-image output shape of ``network`` for ``shape`` inputs (one call at batch 1, step 0)."""
    probe = torch.zeros(1, *shape, device=device)
    return tuple(network(probe, torch.zeros(1, dtype=torch.long, device=device)).shape[1:])

