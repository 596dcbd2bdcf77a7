"""The baseline U-Net (parity with denoising-diffusion-pytorch 1.8.3) and the continuous U-Net."""

from __future__ import annotations

import pytest
import torch
from denoising_diffusion_pytorch import Unet as ReferenceUnet

from missingu.measure import count_parameters, measure_call
from missingu.models import ARCHITECTURES, UNetConfig, build_model
from missingu.models.ode_block import EVALS_PER_STEP


@pytest.mark.parametrize(("channels", "size"), [(3, 64), (1, 32)])
def test_unet_paper_preset_matches_reference_package(channels, size):
    ref = ReferenceUnet(dim=64, dim_mults=(1, 2, 4, 8), channels=channels)
    ours = build_model("unet", UNetConfig(), channels, size)
    assert count_parameters(ours) == count_parameters(ref)
    ours_flops = measure_call(ours, (channels, size, size)).flops
    with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        ref(torch.randn(1, channels, size, size), torch.tensor([500.0]))
    assert ours_flops == pytest.approx(counter.get_total_flops(), rel=0.01)


# Top-level parts whose names differ: reference Unet -> ours. The reference registers `ups`
# before the middle blocks, so the two whole state_dicts are not in the same order; inside
# each top-level part both register their parameters in the same order.
_REFERENCE_PART_NAMES = {"final_res_block": "final_block"}


def _copy_reference_weights(ref: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Load ``ref``'s weights into ``ours``, pairing top-level parts by name and zipping each
    part's state_dict in order; every pair must agree in shape and leaf name (weight/bias/g)."""
    our_parts = dict(ours.named_children())
    mapped = {}
    for name, ref_part in ref.named_children():
        our_name = _REFERENCE_PART_NAMES.get(name, name)
        src, dst = ref_part.state_dict(), our_parts[our_name].state_dict()
        assert len(src) == len(dst), f"{name}: {len(src)} tensors vs {len(dst)} in {our_name}"
        for (ref_key, value), (our_key, target) in zip(src.items(), dst.items()):
            assert value.shape == target.shape, (name, ref_key, our_key, value.shape, target.shape)
            assert ref_key.rsplit(".", 1)[-1] == our_key.rsplit(".", 1)[-1], (name, ref_key, our_key)
            mapped[f"{our_name}.{our_key}"] = value
    assert len(mapped) == len(ref.state_dict())
    ours.load_state_dict(mapped)  # strict: every one of our tensors is covered


@pytest.mark.parametrize(
    ("channels", "size", "steps"), [(3, 64, (0, 999)), (1, 32, (0, 250, 999))]
)
def test_unet_paper_preset_outputs_match_reference_package(channels, size, steps):
    torch.manual_seed(0)
    ref = ReferenceUnet(dim=64, dim_mults=(1, 2, 4, 8), channels=channels).eval()
    with torch.no_grad():
        # Norm gains and shifts start as constants (1s, 0s); randomise them so that how
        # each model uses them shows in the output.
        for p in ref.parameters():
            if p.numel() > 1 and (p == p.flatten()[0]).all():
                p.add_(0.3 * torch.randn_like(p))
    ours = build_model("unet", UNetConfig(), channels, size).eval()
    _copy_reference_weights(ref, ours)
    x = torch.randn(len(steps), channels, size, size)
    t = torch.tensor(steps)
    with torch.no_grad():
        expected, actual = ref(x, t), ours(x, t)
    assert actual.shape == expected.shape
    # float32 round-off alone gives ~1e-6 here; 1e-5 still catches e.g. a GroupNorm eps of
    # 1e-6 instead of 1e-5 (~1e-4 off), which a looser bound would let through.
    assert (actual - expected).abs().max().item() < 1e-5


def _build(arch: str, channels: int = 1, size: int = 8, **options):
    cls = ARCHITECTURES[arch].config_cls
    return build_model(arch, cls(**{**ARCHITECTURES[arch].presets["tiny"], **options}), channels, size)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_and_gradients(arch, channels):
    model = _build(arch, channels)
    x = torch.randn(2, channels, 8, 8, requires_grad=True)
    out = model(x, torch.tensor([3, 40]))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", sorted(EVALS_PER_STEP))
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_cunet_nfe_counter_for_fixed_step_solvers(method, steps):
    model = _build("cunet", solver=method, solver_steps=steps)
    blocks = 3  # tiny preset: two levels -> encoder, middle, decoder
    model(torch.randn(1, 1, 8, 8), torch.tensor([1]))
    assert model.nfe == EVALS_PER_STEP[method] * steps * blocks


def test_cunet_dopri5_counts_its_evaluations():
    model = _build("cunet", solver="dopri5", rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-trivial dynamics
        model(torch.randn(1, 1, 8, 8), torch.tensor([1]))
    assert model.nfe >= 3 * 6  # at least one dopri5 step (6 evaluations) per block
    assert model.nfe % 3 != 0 or model.nfe > 18


def test_cunet_flops_scale_with_nfe():
    one = measure_call(_build("cunet", solver_steps=1), (1, 8, 8)).flops
    four = measure_call(_build("cunet", solver_steps=4), (1, 8, 8)).flops
    static = measure_call(_build("cunet", solver_steps=1, attention=("none", "none")), (1, 8, 8))
    assert four > 3 * one and one > static.flops * 0.5


def test_cunet_adjoint_gradients_match_direct_backprop():
    """The adjoint solves the backward ODE numerically: both converge to the same gradient as
    the steps shrink (RK4, 8 steps: agreement to ~1e-4 relative)."""
    torch.manual_seed(0)
    direct = _build("cunet", solver="rk4", solver_steps=8)
    with torch.no_grad():
        for p in direct.parameters():
            p.add_(0.05 * torch.randn_like(p))
    adjoint = _build("cunet", solver="rk4", solver_steps=8, adjoint=True)
    adjoint.load_state_dict(direct.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 30])
    grads = []
    for model in (direct, adjoint):
        model.zero_grad()
        model(x, t).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() < 1e-3


@pytest.mark.parametrize("dynamics", ["second_order", "augmented_first_order"])
def test_time_conditioning_switch(dynamics):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 8)
    for conditioned in (True, False):
        model = _build("cunet", dynamics=dynamics, time_conditioning=conditioned)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
            a, b = model(x, torch.tensor([1])), model(x, torch.tensor([45]))
        assert (not torch.allclose(a, b)) == conditioned


def test_second_order_state_split():
    """x' = v: with f = 0 the position moves by exactly the initial velocity over s in [0, 1]."""
    from missingu.models.ode_block import ODEBlock

    block = ODEBlock(8, time_dim=None, groups=4)
    z = torch.randn(1, 8, 4, 4)
    out = block(z, None)  # the last conv of f is zero-initialised, so v' = 0
    assert torch.allclose(out[:, :4], z[:, :4] + z[:, 4:], atol=1e-6)
    assert torch.allclose(out[:, 4:], z[:, 4:])


def test_augmented_dynamics_have_more_parameters():
    second = count_parameters(_build("cunet", dynamics="second_order"))
    first = count_parameters(_build("cunet", dynamics="augmented_first_order"))
    assert first > second


def test_unet_attention_per_level():
    with_attn = count_parameters(_build("unet"))
    without = count_parameters(_build("unet", attention=("none", "none")))
    assert with_attn > without


def test_the_spec_names_the_attention_kinds_the_layers_build():
    from missingu.models import ARCHITECTURES, MODULES
    from missingu.models.layers import ATTENTION
    from missingu.specs.models import ARCHITECTURE_SPECS, ATTENTION_KINDS

    assert tuple(ATTENTION) == ATTENTION_KINDS
    assert set(ARCHITECTURES) == set(ARCHITECTURE_SPECS) == set(MODULES)
