"""The `draft` cU-Net preset is the authors' draft network (Sergio20f/cDDPM cUNet.py, 6d7b2d7)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from missingu.measure import count_parameters
from missingu.models import ARCHITECTURES, ModelSpec, model_from_spec
from missingu.models.layers import StepTable

DRAFT_PARAMETERS = 8_811_875  # the draft's own network at 64x64x3 (PAPERS.md)
DRAFT_GMACS = 2.83  # thop, which does not see the attention products
UNET_GMACS = 7.21


def _macs_without_attention(model: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    """Multiply-accumulates of one call in the thop convention: convolutions and linear layers,
    not the batched matmuls of attention (q k^T, attn v, and linear attention's k^T v)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape), torch.tensor([500.0]))
    ops = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    assert set(ops) <= {"aten.convolution", "aten.addmm", "aten.mm", "aten.bmm"}, ops
    return (counter.get_total_flops() - ops.get("aten.bmm", 0)) / 2


def _draft(size: int = 64, **options):
    return model_from_spec(ModelSpec("draft", "cunet", "draft", options), 3, size)


def test_draft_preset_has_the_draft_parameter_count():
    model = _draft()
    assert count_parameters(model) == DRAFT_PARAMETERS
    # the draft's step table (1000 x 256) is a parameter that is never trained
    assert count_parameters(model, trainable_only=True) == DRAFT_PARAMETERS - 1000 * 256


@pytest.mark.parametrize(("arch", "preset", "claimed"), [("cunet", "draft", DRAFT_GMACS), ("unet", "paper", UNET_GMACS)])
def test_macs_without_attention_match_the_draft_numbers(arch, preset, claimed):
    model = model_from_spec(ModelSpec("m", arch, preset), 3, 64).eval()
    assert _macs_without_attention(model, (3, 64, 64)) / 1e9 == pytest.approx(claimed, rel=0.02)


def test_draft_ignores_the_step_unless_time_conditioned():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    small = {"channels": [16, 32], "attention": ["none", "full"]}
    draft = _draft(size=16, **small).eval()
    with torch.no_grad():
        assert torch.equal(draft(x, torch.tensor([3, 3])), draft(x, torch.tensor([900, 900])))
    conditioned = _draft(size=16, time_conditioning=True, **small).eval()
    with torch.no_grad():
        for p in conditioned.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        assert not torch.allclose(conditioned(x, torch.tensor([3, 3])), conditioned(x, torch.tensor([900, 900])))
    # the FiLM layers read the draft's 256-wide table embedding: SiLU -> Linear(256, 2 * width)
    assert count_parameters(_draft(time_conditioning=True)) == DRAFT_PARAMETERS + sum(
        256 * 2 * w + 2 * w for w in (32, 64, 128, 256, 512, 256, 128, 64, 32))


def test_step_table_reads_integer_steps_and_evaluates_fractional_ones():
    table = StepTable(8, rows=10)
    t = torch.tensor([0.0, 3.0, 9.0])
    assert torch.equal(table(t), table.table[[0, 3, 9]])
    assert torch.allclose(table(t), StepTable.formula(t, 8))
    # the draft's layout: sin at even, cos at odd positions, frequencies 10000^(-4i/d)
    expected = torch.tensor([[torch.sin(torch.tensor(2.5 * 10000 ** (-4 * i / 8))).item() if j % 2 == 0 else
                              torch.cos(torch.tensor(2.5 * 10000 ** (-4 * i / 8))).item()
                              for i in range(4) for j in range(2)]])
    assert torch.allclose(table(torch.tensor([2.5])), expected, atol=1e-6)
    assert torch.allclose(table(torch.tensor([12.0])), StepTable.formula(torch.tensor([12.0]), 8))  # past the table


DRAFT_OPTIONS = dict(ARCHITECTURES["cunet"].presets["draft"])


@pytest.mark.parametrize(("key", "value"), sorted(DRAFT_OPTIONS.items()), ids=sorted(DRAFT_OPTIONS))
def test_each_draft_choice_alone_trains(key, value):
    """Every deviation of the draft from the `paper` preset is an option of its own (ablations)."""
    model = model_from_spec(ModelSpec("m", "cunet", "tiny", {key: value}), 1, 8)
    assert getattr(model.config, key) == value != getattr(ARCHITECTURES["cunet"].config_cls(), key)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    out = model(x, torch.tensor([3, 40]))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
