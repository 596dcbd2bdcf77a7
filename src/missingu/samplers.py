"""Reverse-process samplers with one shared signature.

``sample_<kind>(denoiser, diffusion, x_T, *, noise, callback, progress, **options) -> x_0``

``denoiser(x_t, t)`` is the trained network (eps or v output, per ``diffusion.config``);
``noise`` supplies the per-sample random streams of stochastic samplers, so a sample does
not depend on the batch it was drawn in. The DDPM and DDIM samplers can start from any step
``t_start`` (``x`` is then ``x_{t_start}``; default ``T-1``): the denoising task runs them from the
step that matches its noise level. ``callback`` receives a dict with ``step``, ``t``,
``x`` and ``x0`` (the current clean-image estimate) after every network evaluation; ``t`` is
a number, except for the adaptive PF-ODE, where every sample advances at its own pace and ``t``
is a tensor with each sample's (fractional) step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .config import ConfigError, choose
from .diffusion import Denoiser, Diffusion
from .specs.models import FIXED_STEP_SOLVERS
from .specs.samplers import (  # noqa: F401  (re-exported: a config's sampler entry lives with the config)
    ADAPTIVE_CALLS,
    SIDECARS,
    SamplerSpec,
    expected_calls,
    sampler_steps,
    work,
)

Callback = Callable[[dict[str, Any]], None] | None


class SampleNoise:
    """Independent Gaussian streams, one per sample: sample ``k`` draws from a generator
    seeded with ``seeds[k]``, whatever batch it sits in."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    def randn(self, shape: Sequence[int]) -> Tensor:
        """A ``(len(seeds), *shape)`` standard normal tensor."""
        return torch.stack(
            [torch.randn(tuple(shape), generator=g, device=self.device) for g in self.generators]
        )

    def randn_like(self, x: Tensor) -> Tensor:
        return self.randn(x.shape[1:]).to(x.dtype)


class BatchNoise:
    """One Gaussian stream for a whole batch: ``torch.randn`` of the batch's shape from one (CPU)
    ``generator``, moved to the batch's device. A sample then depends on its batch; for a task
    whose batches are fixed (the denoising task's ancestral update)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def randn_like(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)


def _steps(value: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.long)


def _start(t_start: int | None, timesteps: int) -> int:
    if t_start is None:
        return timesteps - 1
    if not 0 <= t_start < timesteps:
        raise ConfigError(f"t_start: {t_start} is not a diffusion step; allowed: 0 to {timesteps - 1}")
    return t_start


def _fixedsmall(d: Diffusion) -> Tensor:
    return d.posterior_var


def _fixedlarge(d: Diffusion) -> Tensor:
    return torch.cat([d.posterior_var[1:2], d.betas[1:]]) if d.timesteps > 1 else d.posterior_var


# The per-step variance sigma_t^2 of the ancestral update, by name (Ho et al. 2020, Sec. 3.2).
DDPM_VARIANCES: dict[str, Callable[[Diffusion], Tensor]] = {"fixedsmall": _fixedsmall, "fixedlarge": _fixedlarge}


def ddpm_variance(diffusion: Diffusion, variance: str = "fixedsmall") -> Tensor:
    """``sigma_t^2``, one per step ``t = 0 .. T-1``, of the ancestral update ``x_{t-1} = mean + sigma_t z``.

    ``fixedsmall``: the posterior variance ``beta-tilde_t = beta_t (1 - ab_{t-1}) / (1 - ab_t)`` of
    ``q(x_{t-1} | x_t, x_0)``, exact when ``x_0`` is a point. ``fixedlarge``: ``beta_t``, exact when
    ``x_0 ~ N(0, I)`` (Ho et al. 2020, Sec. 3.2), who sample CIFAR-10 with it; so does DDSM
    (``--var_type=fixedlarge`` in EnVision-Research/DDSM ``config/slimmable_CIFAR10.txt`` and
    ``eval/flagfile_eval.txt``). Its ``main.py`` builds the ``GaussianDiffusionSampler`` of
    w86763777/pytorch-ddpm (``diffusion.py``, commit 7abb4c0358db4f3f2b0a4609a9d726185b815e65, read here;
    DDSM's own copy was not in reach), whose ``fixedlarge`` log-variance is ``log([beta-tilde_1,
    beta_1, .., beta_{T-1}])``: the entry of ``t = 0`` is ``beta-tilde_1``, followed here. The update at
    ``t = 0`` adds no noise, so that entry never enters a sample. The two agree as ``t`` grows
    (``ab_{t-1} -> ab_t``) and differ most over the last, least noisy steps."""
    return choose(DDPM_VARIANCES, variance, "DDPM variance", "variance")(diffusion)


def sample_ddpm(
    denoiser: Denoiser,
    diffusion: Diffusion,
    x: Tensor,
    *,
    noise: SampleNoise | BatchNoise | None,
    callback: Callback = None,
    progress: bool = False,
    clip_denoised: bool = True,
    variance: str = "fixedsmall",
    t_start: int | None = None,
) -> Tensor:
    """Ancestral sampling from step ``t_start`` (default T-1) to 0, Ho et al. 2020 Alg. 2:
    ``x_{t-1} = c0_t x0 + ct_t x_t + sigma_t z`` with the posterior mean's coefficients and
    ``sigma_t^2`` per ``variance`` (:func:`ddpm_variance`), no noise at ``t = 0``; ``noise=None``
    takes the mean at every step (no noise). ``clip_denoised`` clamps ``x0`` to ``[-1, 1]`` before
    the mean (pytorch-ddpm's sampler, which DDSM runs, clamps it only after computing the mean, so
    its mean is unclipped; ``clip_denoised: false`` is that)."""
    d = diffusion.to(x.device)
    sigma = ddpm_variance(d, variance).sqrt()
    first = _start(t_start, d.timesteps)
    for i in tqdm(range(first, -1, -1), desc="ddpm", disable=not progress, leave=False):
        t = _steps(i, x)
        _, x0 = d.eps_x0(denoiser(x, t), x, t, clip=clip_denoised)
        mean = d.posterior_c0[i] * x0 + d.posterior_ct[i] * x
        x = mean + sigma[i] * noise.randn_like(x) if i > 0 and noise is not None else mean
        if callback is not None:
            callback({"step": first - i, "t": i, "x": x, "x0": x0})
    return x


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` step indices from ``T-1`` down to ``0``, evenly spaced (Song et al. 2021, 'linear')."""
    return sorted({round(v) for v in torch.linspace(0, timesteps - 1, steps).tolist()}, reverse=True)


def sample_ddim(
    denoiser: Denoiser,
    diffusion: Diffusion,
    x: Tensor,
    *,
    noise: SampleNoise | BatchNoise | None,
    callback: Callback = None,
    progress: bool = False,
    steps: int = 50,
    eta: float = 0.0,
    clip_denoised: bool = True,
    t_start: int | None = None,
) -> Tensor:
    """DDIM, Song et al. 2021 Eq. 12: ``x_prev = sqrt(ab') x0 + sqrt(1 - ab' - s^2) eps + s z``,
    ``s = eta sqrt((1-ab')/(1-ab)) sqrt(1 - ab/ab')``; the last step goes to ``ab' = 1``. The ``steps``
    are spread evenly over steps ``t_start`` (default T-1) to 0."""
    d = diffusion.to(x.device)
    span = _start(t_start, d.timesteps) + 1
    times = ddim_timesteps(span, min(steps, span))
    for k, i in enumerate(tqdm(times, desc=f"ddim{steps}", disable=not progress, leave=False)):
        t = _steps(i, x)
        eps, x0 = d.eps_x0(denoiser(x, t), x, t, clip=clip_denoised)
        ab = d.alpha_bar[i]
        ab_prev = d.alpha_bar[times[k + 1]] if k + 1 < len(times) else torch.ones_like(ab)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and k + 1 < len(times):
            x = x + sigma * noise.randn_like(x)
        if callback is not None:
            callback({"step": k, "t": i, "x": x, "x0": x0})
    return x


def sample_pf_ode(
    denoiser: Denoiser,
    diffusion: Diffusion,
    x: Tensor,
    *,
    noise: SampleNoise | BatchNoise | None,
    callback: Callback = None,
    progress: bool = False,
    method: str = "dopri5",
    steps: int = 50,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Tensor:
    """Probability-flow ODE (Song et al. 2021, score SDE).

    With ``sigma = sqrt((1 - ab)/ab)`` and ``u = log sigma`` the PF-ODE of the (variance
    preserving) DDPM reads ``dx/du = sqrt(1 - ab) eps(x, t(u)) - (1 - ab) x`` with ``ab = 1/(1 + sigma^2)``
    (the DDIM ODE, Song et al. 2021 Eq. 14, in x-space). It is integrated from step ``T-1``
    to step ``0`` (``t(u)`` interpolates ``log alpha_bar`` between steps), then ``x0`` is
    predicted once more at step 0.

    Fixed-step methods take ``steps`` uniform steps in ``u`` with torchdiffeq. Adaptive methods
    (``dopri5``) are solved with torchode, which controls the step size of every sample on its
    own (own error norm, accepted and rejected steps): torchdiffeq's adaptive solvers pick one
    step size from an error norm over the whole batch, so a sample would depend on the batch it
    is drawn in. The denoiser is still called on the whole batch at once, each sample at its own
    ``t``; a sample that has reached step 0 is carried along unchanged until the slowest one
    finishes, so the batch makes as many network calls as its most demanding sample alone.
    """
    d = diffusion.to(x.device)
    t_grid = torch.arange(d.timesteps, dtype=torch.float64, device=x.device)
    ab = d.alpha_bar_at(t_grid.float()).double()
    log_sigma = 0.5 * ((1 - ab) / ab).log()  # increasing in t
    u_start, u_end = log_sigma[-1].item(), log_sigma[0].item()
    bar = tqdm(desc=f"pf_ode/{method}", disable=not progress, leave=False, unit="nfe")
    nfe = 0

    def t_of_u(u: Tensor) -> Tensor:
        """Fractional step indices with ``log sigma(t) = u`` (linear interpolation), one per entry of ``u``."""
        u = u.double().reshape(-1).contiguous()
        hi = torch.searchsorted(log_sigma, u).clamp(1, d.timesteps - 1)
        lo = hi - 1
        frac = (u - log_sigma[lo]) / (log_sigma[hi] - log_sigma[lo])
        return (lo + frac.clamp(0, 1)).float()

    def field(u: Tensor, x_u: Tensor) -> Tensor:
        """``dx/du`` at a shared ``u`` (a scalar) or at one ``u`` per sample."""
        nonlocal nfe
        t = t_of_u(u).expand(x_u.shape[0])
        eps, x0 = d.eps_x0(denoiser(x_u, t), x_u, t)
        one_minus_ab = torch.sigmoid(2 * u).to(x_u.dtype).reshape(-1, *[1] * (x_u.dim() - 1))  # sigma^2/(1+sigma^2)
        nfe += 1
        bar.update()
        if callback is not None:
            callback({"step": nfe - 1, "t": t[0].item() if u.dim() == 0 else t, "x": x_u, "x0": x0})
        return one_minus_ab.sqrt() * eps - one_minus_ab * x_u

    if method in FIXED_STEP_SOLVERS:
        from torchdiffeq import odeint  # here: it imports scipy.integrate (a second of every command's start)

        grid = torch.linspace(u_start, u_end, steps + 1, device=x.device)
        x = odeint(field, x, grid, method=method)[-1]
    else:
        x = _solve_per_sample(field, x, u_start, u_end, method=method, rtol=rtol, atol=atol)
    t0 = torch.zeros(x.shape[0], device=x.device)
    _, x0 = d.eps_x0(denoiser(x, t0), x, t0)
    bar.close()
    return x0


def _solve_per_sample(
    field: Callable[[Tensor, Tensor], Tensor], x: Tensor, u_start: float, u_end: float, *,
    method: str, rtol: float, atol: float,
) -> Tensor:
    """``x(u_end)`` for ``dx/du = field(u, x)``, ``x(u_start) = x``, with torchode's adaptive
    ``method``: one step size per sample. ``field`` gets a ``(B,)`` float64 ``u`` and images."""
    shape = x.shape
    import torchode  # imported when used: half a second every command would pay

    term = torchode.ODETerm(lambda u, y: field(u, y.reshape(shape)).flatten(1))
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term).to(x.device)
    # time in float64 (torchode keeps the time and data dtypes apart); the data stay in x's dtype
    u_span = torch.tensor([u_start, u_end], dtype=torch.float64, device=x.device)
    solution = torchode.solve_ivp(term, x.flatten(1), u_span, method=method, controller=controller)
    failed = (solution.status != torchode.Status.SUCCESS.value).nonzero().flatten().tolist()
    if failed:
        codes = sorted({torchode.Status(int(c)).name for c in solution.status[failed]})
        raise RuntimeError(f"pf_ode/{method}: the ODE solve failed for batch entries {failed} ({', '.join(codes)})")
    return solution.ys[:, -1].reshape(shape)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "pf_ode": sample_pf_ode,
}


@dataclass
class SampleOutput:
    """Samples in model range ``[-1, 1]`` (not clamped), the number of network calls and, for
    networks with ODE blocks (an ``nfe`` attribute), the ODE-function evaluations they made.

    A network call evaluates the denoiser on the whole batch. For the adaptive PF-ODE each
    sample takes its own steps and the batch makes the calls of its most demanding sample drawn
    alone (finished samples are evaluated along until the last one is done), so the count can
    grow with the batch size while every sample's result stays the same."""

    images: Tensor
    network_calls: int
    ode_evaluations: int | None = None


def sample(
    denoiser: Denoiser,
    diffusion: Diffusion,
    spec: SamplerSpec,
    shape: Sequence[int],
    seeds: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    callback: Callback = None,
    progress: bool = False,
) -> SampleOutput:
    """Draw ``len(seeds)`` samples of ``shape`` (C, H, W) with sampler ``spec``; ``x_T`` and all
    later noise of sample ``k`` come from seed ``seeds[k]``."""
    if len(seeds) == 0:
        raise ConfigError("num_samples: must be positive")
    calls, evaluations = 0, 0
    has_nfe = hasattr(denoiser, "nfe")

    def counted(x: Tensor, t: Tensor) -> Tensor:
        nonlocal calls, evaluations
        calls += 1
        out = denoiser(x, t)
        if has_nfe:
            evaluations += denoiser.nfe  # type: ignore[attr-defined]
        return out

    noise = SampleNoise(seeds, device)
    x_T = noise.randn(shape)
    fn = SAMPLERS[spec.kind]
    with torch.no_grad():
        images = fn(counted, diffusion, x_T, noise=noise, callback=callback, progress=progress, **spec.options())
    return SampleOutput(images, calls, evaluations if has_nfe else None)


__all__ = [
    "DDPM_VARIANCES", "SAMPLERS", "BatchNoise", "SampleNoise", "SampleOutput", "SamplerSpec", "ddim_timesteps",
    "ddpm_variance", "expected_calls", "sample", "sample_ddim", "sample_ddpm", "sample_pf_ode", "sampler_steps", "work",
]
