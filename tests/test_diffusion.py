"""Noise schedules, the forward process and the eps/v conversions."""

from __future__ import annotations

import pytest
import torch

from missingu.diffusion import SCHEDULES, Diffusion, DiffusionConfig


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("timesteps", [100, 1000])
def test_schedules_are_valid(schedule, timesteps):
    d = Diffusion(DiffusionConfig(schedule=schedule, timesteps=timesteps))
    assert d.betas.shape == (timesteps,)
    assert ((d.betas > 0) & (d.betas < 1)).all()
    assert (d.alpha_bar[1:] < d.alpha_bar[:-1]).all()  # strictly more noise each step
    assert d.alpha_bar[-1] < 1e-2  # x_T is (almost) pure noise
    assert d.alpha_bar[0] > 0.99  # x_0 is (almost) clean


def test_linear_schedule_endpoints_at_1000_steps():
    d = Diffusion(DiffusionConfig(timesteps=1000))
    assert d.betas[0].item() == pytest.approx(1e-4)
    assert d.betas[-1].item() == pytest.approx(0.02)


def test_fractional_steps_interpolate_log_alpha_bar():
    d = Diffusion()
    t = torch.arange(0, 1000)
    assert torch.allclose(d.alpha_bar_at(t.float()), d.alpha_bar, rtol=1e-6)
    mid = d.alpha_bar_at(torch.tensor([10.5]))
    assert mid.item() == pytest.approx((d.alpha_bar[10] * d.alpha_bar[11]).sqrt().item(), rel=1e-6)


def test_q_sample_moments():
    d = Diffusion()
    x0 = torch.full((20000,), 0.7)
    t = torch.full((20000,), 300)
    xt = d.q_sample(x0, t, torch.randn(20000, generator=torch.Generator().manual_seed(0)))
    ab = d.alpha_bar[300]
    assert xt.mean().item() == pytest.approx((ab.sqrt() * 0.7).item(), abs=0.03)
    assert xt.std().item() == pytest.approx((1 - ab).sqrt().item(), abs=0.03)


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_perfect_prediction_recovers_x0_and_eps_and_zero_loss(objective):
    d = Diffusion(DiffusionConfig(objective=objective))
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    xt = d.q_sample(x0, t, noise)
    target = d.target(x0, noise, t)
    eps, x0_hat = d.eps_x0(target, xt, t)
    assert torch.allclose(eps, noise, atol=1e-4)
    assert torch.allclose(x0_hat[:3], x0[:3], atol=1e-3)  # at t=999 dividing by sqrt(ab) amplifies rounding

    def oracle(x, tt):
        return target

    assert d.loss(oracle, x0, t, noise).item() < 1e-10
    assert d.loss(lambda x, tt: torch.zeros_like(x), x0, t, noise).item() > 0.1


def test_clipped_x0_gives_consistent_eps():
    d = Diffusion()
    xt, t = torch.full((1, 1, 2, 2), 3.0), torch.tensor([5])
    eps, x0 = d.eps_x0(torch.zeros_like(xt), xt, t, clip=True)
    assert x0.max().item() == 1.0
    ab = d.alpha_bar[5]
    assert torch.allclose(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, xt, atol=1e-5)
