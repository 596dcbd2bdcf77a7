"""Samplers against a closed form: for data x0 ~ N(mu, s^2) (per pixel) the optimal denoiser is

    E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab),

so plugging it in, every sampler should return samples with mean mu and std s.

Tolerance (0.015 on mean and std): with 32 x 64 x 64 = 131,072 independent pixels the
standard error is s / 362 ~ 0.0014 for the mean and s / 512 ~ 0.001 for the std, so 4
standard errors are under 0.006; the settings below (DDPM with all 1000 steps, DDIM with
1000 steps, the PF-ODE with dopri5 at rtol = atol = 1e-5) add a discretisation bias that
measured under 0.005 here (DDIM's std bias is 0.03 at 50 steps and shrinks as 1/steps,
checked separately). A denoiser for the wrong Gaussian misses by 0.2 and must fail.
"""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

import missingu.samplers
from missingu.config import build
from missingu.diffusion import Diffusion, DiffusionConfig
from missingu.samplers import SAMPLERS, SamplerSpec, ddim_timesteps, expected_calls, sample

MU, S = 0.3, 0.5
TOL = 0.015
ACCURATE = {
    "ddpm": {"kind": "ddpm", "clip_denoised": False},
    "ddim": {"kind": "ddim", "steps": 1000, "clip_denoised": False},
    "pf_ode": {"kind": "pf_ode", "method": "dopri5", "rtol": 1e-5, "atol": 1e-5},
}


def gaussian_denoiser(diffusion: Diffusion, mu: float, s: float):
    """The MMSE eps (or v) prediction for data N(mu, s^2)."""

    def denoise(x, t):
        ab = diffusion.alpha_bar_at(t).reshape(-1, 1, 1, 1)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s * s + 1 - ab)
        if diffusion.config.objective == "eps":
            return eps
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    return denoise


def _moments(kind: str, objective: str = "eps", schedule: str = "linear", mu: float = MU, s: float = S, **over):
    d = Diffusion(DiffusionConfig(schedule=schedule, objective=objective))
    spec = SamplerSpec(name=kind, **{**ACCURATE[kind], **over})
    out = sample(gaussian_denoiser(d, mu, s), d, spec, (1, 64, 64), range(32))
    x = out.images.double()
    return x.mean().item(), x.std().item(), out.network_calls


def test_every_registered_sampler_is_covered():
    assert set(ACCURATE) == set(SAMPLERS)


@pytest.mark.parametrize("kind", sorted(ACCURATE))
@pytest.mark.parametrize(("objective", "schedule"), [("eps", "linear"), ("v", "cosine")])
def test_sampler_reproduces_gaussian(kind, objective, schedule):
    mean, std, _ = _moments(kind, objective, schedule)
    assert abs(mean - MU) < TOL
    assert abs(std - S) < TOL


@pytest.mark.parametrize("kind", sorted(ACCURATE))
def test_wrong_denoiser_fails_the_check(kind):
    mean, std, _ = _moments(kind, s=S + 0.2)
    assert abs(std - S) > TOL


def test_ddim_bias_shrinks_with_steps():
    errors = [abs(_moments("ddim", steps=n)[1] - S) for n in (10, 50, 250)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "ddpm"}, {"kind": "ddim", "steps": 50}, {"kind": "ddim", "steps": 7},
        {"kind": "pf_ode", "method": "rk4", "steps": 5}, {"kind": "pf_ode", "method": "euler", "steps": 9},
    ],
)
def test_counted_calls_match_expected(spec):
    d = Diffusion()
    s = SamplerSpec(name="x", **spec)
    out = sample(gaussian_denoiser(d, 0.0, 1.0), d, s, (1, 2, 2), [0])
    assert out.network_calls == expected_calls(s, 1000)


def test_ddim_timesteps_span_the_chain():
    times = ddim_timesteps(1000, 50)
    assert len(times) == 50 and times[0] == 999 and times[-1] == 0
    assert times == sorted(times, reverse=True)


def _tiny_model():
    from missingu.models import ARCHITECTURES, build_model

    torch.manual_seed(0)
    arch = ARCHITECTURES["unet"]
    return build_model("unet", arch.config_cls(**arch.presets["tiny"]), 1, 8).eval()


@pytest.mark.parametrize(
    "spec", [{"kind": "ddpm"}, {"kind": "ddim", "steps": 5, "eta": 1.0}, {"kind": "pf_ode", "method": "rk4", "steps": 2}]
)
def test_samples_do_not_depend_on_batch_size(spec):
    model, d = _tiny_model(), Diffusion(DiffusionConfig(timesteps=50))
    s = SamplerSpec(name="x", **spec)
    whole = sample(model, d, s, (1, 8, 8), range(6)).images
    parts = torch.cat([sample(model, d, s, (1, 8, 8), range(i, i + 2)).images for i in (0, 2, 4)])
    # batched convolutions round differently; DDIM's 1/sqrt(alpha_bar) jumps amplify that to ~1e-5
    assert torch.allclose(whole, parts, atol=1e-4)
    other_seeds = sample(model, d, s, (1, 8, 8), range(10, 16)).images
    assert not torch.allclose(whole, other_seeds)


def mixture_denoiser(diffusion: Diffusion, m: float, s: float):
    """The MMSE eps prediction for pixels drawn from ``0.5 N(-m, s^2) + 0.5 N(m, s^2)``: with
    ``v = ab s^2 + 1 - ab`` the posterior mean of the component centre is ``m tanh(sqrt(ab) m x / v)``.
    Unlike the Gaussian's linear field, this one turns steep late in the chain for the pixels
    that sit between the modes, so samples ask for different step sizes."""

    def denoise(x, t):
        ab = diffusion.alpha_bar_at(t).reshape(-1, 1, 1, 1)
        v = ab * s * s + 1 - ab
        centre = m * torch.tanh(ab.sqrt() * m * x / v)
        return (1 - ab).sqrt() * (x - ab.sqrt() * centre) / v

    return denoise


def _batch_wide_solve(field, x, u_start, u_end, *, method, rtol, atol):
    """The PF-ODE solve before per-sample step control: torchdiffeq with one step size per batch."""
    return odeint(field, x, torch.tensor([u_start, u_end]), method=method, rtol=rtol, atol=atol)[-1]


def _dopri5_batch_and_alone(callback=None):
    """Seeds 0..7 drawn as one batch of 8 and one at a time, with dopri5 at rtol = atol = 1e-5."""
    d = Diffusion()
    spec = SamplerSpec(name="x", kind="pf_ode", method="dopri5", rtol=1e-5, atol=1e-5)
    denoiser = mixture_denoiser(d, 0.6, 0.05)
    whole = sample(denoiser, d, spec, (1, 8, 8), range(8), callback=callback)
    alone = [sample(denoiser, d, spec, (1, 8, 8), [k]) for k in range(8)]
    return whole, alone


# The images lie in about [-1, 1]. A sample's arithmetic is the same in any batch (the denoiser is
# elementwise, the step control per sample), so only float32 rounding of batched operations may
# differ: 1e-5 is ~100 float32 ulps at that scale, yet below the solver's own per-step tolerance.
# A step size shared by the batch moves each sample by the solver's error instead: 4e-4 measured
# (test below), 40 times the tolerance.
BATCH_TOL = 1e-5


def test_adaptive_pf_ode_does_not_depend_on_batch_size():
    seen = []
    whole, alone = _dopri5_batch_and_alone(callback=seen.append)
    images = torch.cat([out.images for out in alone])
    assert torch.allclose(whole.images, images, rtol=0, atol=BATCH_TOL)
    # samples take different numbers of steps; the batch calls the network until its slowest one is done
    calls = [out.network_calls for out in alone]
    assert len(set(calls)) > 1 and whole.network_calls == max(calls)
    # one callback per ODE evaluation (all but the final x0 prediction), each sample at its own step
    assert len(seen) == whole.network_calls - 1
    assert all(c["t"].shape == (8,) for c in seen) and any(len(set(c["t"].tolist())) > 1 for c in seen)


def test_batch_wide_step_size_would_fail_the_batch_check(monkeypatch):
    monkeypatch.setattr(missingu.samplers, "_solve_per_sample", _batch_wide_solve)
    whole, alone = _dopri5_batch_and_alone()
    images = torch.cat([out.images for out in alone])
    assert (whole.images - images).abs().max() > BATCH_TOL


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize(("s", "holds"), [(S, True), (S + 0.2, False)])
def test_a_chain_started_at_t_start_reproduces_gaussian(kind, s, holds):
    """From x_t of Gaussian data (the forward process at t_start = 500), the exact denoiser's DDPM
    and DDIM chains end at the data's distribution (the denoising task starts them there); a
    denoiser for another Gaussian (negative control) does not."""
    d = Diffusion(DiffusionConfig())
    t_start = 500
    g = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn(32, 1, 64, 64, generator=g)
    ab = d.alpha_bar[t_start]
    x = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=g)
    calls = []

    def denoiser(x, t):
        calls.append(int(t[0]))
        return gaussian_denoiser(d, MU, s)(x, t)

    fn = SAMPLERS[kind]
    options = {"steps": t_start + 1} if kind == "ddim" else {}
    out = fn(denoiser, d, x, noise=missingu.samplers.SampleNoise(range(32)), clip_denoised=False, t_start=t_start,
             **options).double()
    assert calls == list(range(t_start, -1, -1))
    ok = abs(out.mean().item() - MU) < TOL and abs(out.std().item() - S) < TOL
    assert ok == holds


def test_t_start_outside_the_chain_is_refused():
    d = Diffusion(DiffusionConfig(timesteps=50))
    with pytest.raises(missingu.samplers.ConfigError, match="t_start: 50 is not a diffusion step; allowed: 0 to 49"):
        SAMPLERS["ddpm"](gaussian_denoiser(d, 0, 1), d, torch.zeros(1, 1, 2, 2), noise=None, t_start=50)


# The DDPM sampler's per-step variance: fixedsmall (posterior beta-tilde_t, the default) or fixedlarge
# (beta_t, Ho et al. 2020 on CIFAR-10 and DDSM).


@pytest.mark.parametrize(("s", "holds"), [(S, True), (S + 0.2, False)])
def test_ddpm_fixedlarge_reproduces_gaussian(s, holds):
    """beta_t exceeds beta-tilde_t only where ab_{t-1} differs from ab_t, over the last few of 1,000
    steps, so the extra noise is small: the std missed by under 0.001 here (fixedsmall: 0.005; with
    the v objective and the cosine schedule 0.0006 and 0.002). A denoiser for the wrong Gaussian
    (negative control) still misses."""
    mean, std, calls = _moments("ddpm", s=s, variance="fixedlarge")
    assert calls == 1000
    assert (abs(mean - MU) < TOL and abs(std - S) < TOL) == holds


def _first_step(variance: str, t_start: int, noise) -> torch.Tensor:
    """``x_{t_start - 1}``: the first update of a DDPM chain started at ``t_start``."""
    d = Diffusion(DiffusionConfig(timesteps=50))
    seen = []
    x = torch.linspace(-1, 1, 4).reshape(1, 1, 2, 2)
    SAMPLERS["ddpm"](gaussian_denoiser(d, MU, S), d, x, noise=noise, callback=seen.append, clip_denoised=False,
                     variance=variance, t_start=t_start)
    return seen[0]["x"]


class _Ones:
    """A noise stream of ones, so an update's noise term is its standard deviation itself."""

    @staticmethod
    def randn_like(x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)


@pytest.mark.parametrize("variance", ["fixedsmall", "fixedlarge"])
def test_ddpm_step_noise_has_the_named_variance(variance):
    """With a noise draw of ones the update minus its mean (the same chain without noise) is
    sigma_t: sqrt(beta-tilde_t) for fixedsmall, sqrt(beta_t) for fixedlarge; at small t the two differ
    by a factor over 1.4, so either answer for the other variance fails."""
    d = Diffusion(DiffusionConfig(timesteps=50))
    expected = {"fixedsmall": d.posterior_var, "fixedlarge": d.betas}[variance]
    other = {"fixedsmall": d.betas, "fixedlarge": d.posterior_var}[variance]
    for t in (1, 2, 25, 49):
        sigma = _first_step(variance, t, _Ones()) - _first_step(variance, t, None)
        assert torch.allclose(sigma, expected[t].sqrt().expand_as(sigma), rtol=1e-4), t
    assert (other[1] / expected[1]).sqrt() > 1.4 or (expected[1] / other[1]).sqrt() > 1.4


def test_fixedlarge_variance_follows_the_ddsm_sampler():
    """beta_t at t >= 1; at t = 0 (where no noise is added) beta-tilde_1, as pytorch-ddpm's sampler
    that DDSM runs sets its log-variance."""
    d = Diffusion()
    large, small = missingu.samplers.ddpm_variance(d, "fixedlarge"), missingu.samplers.ddpm_variance(d)
    assert torch.equal(large[1:], d.betas[1:]) and large[0] == d.posterior_var[1]
    assert torch.equal(small, d.posterior_var)
    assert not torch.allclose(large[1:10], small[1:10])


def test_variance_option_reaches_the_sampler_and_is_validated():
    d = Diffusion(DiffusionConfig(timesteps=50))
    spec = {v: SamplerSpec(name=v, kind="ddpm", variance=v) for v in ("fixedsmall", "fixedlarge")}
    assert spec["fixedlarge"].options() == {"clip_denoised": True, "variance": "fixedlarge"}
    assert SamplerSpec(name="x", kind="ddpm").variance == "fixedsmall"
    out = {v: sample(gaussian_denoiser(d, MU, S), d, s, (1, 4, 4), range(2)).images for v, s in spec.items()}
    assert not torch.allclose(out["fixedsmall"], out["fixedlarge"])
    with pytest.raises(missingu.samplers.ConfigError,
                       match="variance: unknown DDPM variance 'fixed'; allowed: fixedlarge, fixedsmall"):
        SamplerSpec(name="x", kind="ddpm", variance="fixed")
    with pytest.raises(missingu.samplers.ConfigError,
                       match=r"samplers\[0\].variance: 'large' is not allowed; allowed: 'fixedsmall', 'fixedlarge'"):
        build(SamplerSpec, {"name": "x", "kind": "ddpm", "variance": "large"}, "samplers[0]")
    for kind in ("ddim", "pf_ode"):
        with pytest.raises(missingu.samplers.ConfigError,
                           match=f"samplers\\[0\\].variance: 'fixedlarge' applies to kind ddpm only \\(kind {kind}\\)"):
            build(SamplerSpec, {"name": "x", "kind": kind, "variance": "fixedlarge"}, "samplers[0]")
    assert build(SamplerSpec, {"name": "x", "kind": "ddim", "variance": "fixedsmall"}, "s").options()["steps"] == 50


def test_the_specs_name_what_the_samplers_run_and_count_their_ddim_steps():
    """The torch-free spec (read by the config and the plan) names the kinds and variances this
    module runs, and counts DDIM's calls as :func:`ddim_timesteps` visits them."""
    from missingu.samplers import DDPM_VARIANCES, SAMPLERS, ddim_timesteps, expected_calls
    from missingu.specs.samplers import DDPM_VARIANCE_NAMES, SAMPLER_KINDS

    assert tuple(SAMPLERS) == SAMPLER_KINDS and tuple(DDPM_VARIANCES) == DDPM_VARIANCE_NAMES
    for timesteps in (2, 7, 50, 100, 500, 1000):
        for steps in sorted({1, 2, 3, 9, 10, 23, 50, 95, 256, timesteps - 1, timesteps, timesteps + 5} - {0}):
            spec = SamplerSpec("d", "ddim", steps=steps)
            assert expected_calls(spec, timesteps) == len(ddim_timesteps(timesteps, min(steps, timesteps)))
