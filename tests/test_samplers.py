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
