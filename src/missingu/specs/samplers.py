"""A sampler entry of a config, the network calls it makes, and the work of drawing with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, choose, entry_name, in_range, positive
from ..task import Work, image_values
from .models import EVALS_PER_STEP, FIXED_STEP_SOLVERS, SOLVERS

# The file `missingu sample` writes beside its samples (missingu.io.sidecars).
SIDECARS = {"summary": ".json"}
#: the sampler kinds (missingu.samplers.SAMPLERS runs them) and the DDPM sampler's variances
#: (missingu.samplers.DDPM_VARIANCES computes them)
SAMPLER_KINDS = ("ddpm", "ddim", "pf_ode")
DDPM_VARIANCE_NAMES = ("fixedsmall", "fixedlarge")


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler entry of a config. ``kind`` picks the algorithm; ``steps`` is the number of
    DDIM steps or of fixed PF-ODE solver steps; ``method``/``rtol``/``atol`` set the PF-ODE solver;
    ``variance`` is the DDPM sampler's per-step variance (:func:`missingu.samplers.ddpm_variance`), DDPM only."""

    name: str
    kind: Literal["ddpm", "ddim", "pf_ode"]
    steps: int = 50
    eta: float = 0.0
    clip_denoised: bool = True
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    variance: Literal["fixedsmall", "fixedlarge"] = "fixedsmall"

    def __post_init__(self) -> None:
        entry_name(self.name)
        choose(dict.fromkeys(SAMPLER_KINDS), self.kind, "sampler", "kind")
        positive(self.steps, "steps")
        in_range(self.eta, 0.0, 1.0, "eta")
        choose(SOLVERS, self.method, "ODE solver", "method")
        positive(self.rtol, "rtol")
        positive(self.atol, "atol")
        choose(dict.fromkeys(DDPM_VARIANCE_NAMES), self.variance, "DDPM variance", "variance")
        if self.kind != "ddpm" and self.variance != "fixedsmall":
            raise ConfigError(f"variance: {self.variance!r} applies to kind ddpm only (kind {self.kind}); "
                              f"allowed for kind {self.kind}: 'fixedsmall' (the default), or leave it out")

    def options(self) -> dict[str, Any]:
        """Keyword options of the sampler function for this kind."""
        if self.kind == "ddpm":
            return {"clip_denoised": self.clip_denoised, "variance": self.variance}
        if self.kind == "ddim":
            return {"steps": self.steps, "eta": self.eta, "clip_denoised": self.clip_denoised}
        return {"method": self.method, "steps": self.steps, "rtol": self.rtol, "atol": self.atol}


def sampler_steps(spec: SamplerSpec, timesteps: int | None) -> int | None:
    """The steps a sampler takes: all ``T`` for DDPM, its ``steps`` for DDIM and fixed-step
    PF-ODE solvers, ``None`` for adaptive ones (their steps vary; see the network calls)."""
    if spec.kind == "ddpm":
        return timesteps
    if spec.kind == "ddim" or spec.method in FIXED_STEP_SOLVERS:
        return spec.steps
    return None


def expected_calls(spec: SamplerSpec, timesteps: int) -> int | None:
    """Network calls a sampler makes (``None`` for adaptive ODE solvers)."""
    if spec.kind == "ddpm":
        return timesteps
    if spec.kind == "ddim":  # missingu.samplers.ddim_timesteps: as many distinct steps as asked, at most T (tested)
        return min(spec.steps, timesteps)
    if spec.method in FIXED_STEP_SOLVERS:
        return EVALS_PER_STEP[spec.method] * spec.steps + 1
    return None


# Network calls a work estimate assumes for an adaptive PF-ODE solver, whose count depends on the weights.
ADAPTIVE_CALLS = 500


def work(spec: SamplerSpec, timesteps: int, num_samples: int, shape: tuple[int, int, int]) -> Work:
    """Drawing ``num_samples`` images with ``spec``: each image through every network call
    (:func:`expected_calls`; :data:`ADAPTIVE_CALLS` for an adaptive solver)."""
    calls = expected_calls(spec, timesteps) or ADAPTIVE_CALLS
    return Work(forward_values=float(num_samples * calls * image_values(shape)))
