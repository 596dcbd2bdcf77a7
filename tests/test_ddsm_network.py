"""The slimmable DDPM U-Net as the official DDSM network (EnVision-Research/DDSM) by default:
its initialisation, GroupNorm groups and concatenation slicing, each with this package's earlier
choice as an option, and the counts that must not move with them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from missingu.config import ConfigError
from missingu.measure import count_parameters, measure_call
from missingu.models import ARCHITECTURES, DDPMUNetConfig, build_model
from missingu.models.ddpm import OUTPUT_GAIN, AttnBlock, ResnetBlock, at_width
from missingu.models.slim import SlimConv2d, SlimGroupNorm, Width

OURS = {"init": "torch", "norm_groups": "scaled", "concat_slicing": "parts"}
SMALL = {"ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attention": ("none", "full"), "dropout": 0.0,
         "groups": 8, "widths": (1.0, 0.5)}


def _small(seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("ddpm", DDPMUNetConfig(**{**SMALL, **options}), 3, 8).eval()


def _xavier_bound(weight: torch.Tensor, gain: float = 1.0) -> float:
    fan_in, fan_out = weight.shape[1] * weight[0, 0].numel(), weight.shape[0] * weight[0, 0].numel()
    return gain * math.sqrt(6 / (fan_in + fan_out))


def _outputs(model: nn.Module) -> set[str]:
    """Names of the layers DDSM draws with gain ``OUTPUT_GAIN``: residual ``conv2`` and ``conv_out``."""
    return {f"{n}.conv2" for n, m in model.named_modules() if isinstance(m, ResnetBlock)} | {"conv_out"}


def test_presets_choose_ddsm_behaviour_for_ddsm_and_ours_for_the_cpu_presets():
    presets = ARCHITECTURES["ddpm"].presets
    ddsm = DDPMUNetConfig(**presets["ddsm"])
    assert (ddsm.init, ddsm.norm_groups, ddsm.concat_slicing) == ("ddsm", "fixed", "block")
    for name in ("digits", "tiny"):
        config = DDPMUNetConfig(**presets[name])
        assert (config.init, config.norm_groups, config.concat_slicing) == ("torch", "scaled", "parts")
    with pytest.raises(ConfigError, match="norm_groups 'fixed' keeps 4 groups at every width"):
        DDPMUNetConfig(**{**presets["digits"], "norm_groups": "fixed"})  # 8 channels x 0.25 = 2 < 4 groups


def test_ddsm_preset_initialisation_is_xavier_with_tiny_output_layers():
    model = build_model("ddpm", DDPMUNetConfig(), 3, 32)
    outputs = _outputs(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert len(outputs) == 2 * 4 + 3 * 4 + 2 + 1 and outputs <= set(layers)
    for name, layer in layers.items():
        assert torch.count_nonzero(layer.bias) == 0, name
        gain = OUTPUT_GAIN if name in outputs else 1.0
        bound = _xavier_bound(layer.weight, gain)
        assert layer.weight.abs().max() <= bound, name
        if layer.weight.numel() >= 4096:  # uniform on (-b, b): std b / sqrt(3)
            assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
    # as the official code runs: its ResBlock re-draws the attention's projection with gain 1
    attn = [m for m in model.modules() if isinstance(m, AttnBlock)]
    assert len(attn) == 2 + 3 + 1  # level 1: encoder, decoder; middle
    for block in attn:
        assert block.proj_out.weight.std().item() == pytest.approx(
            _xavier_bound(block.proj_out.weight) / math.sqrt(3), rel=0.1)
    for name in outputs:
        assert 0 < layers[name].weight.abs().max() < 1e-6, name


def test_torch_initialisation_is_not_xavier():
    """Negative control: PyTorch's defaults (``U(+-1/sqrt(fan_in))``, non-zero biases)."""
    model = _small(**OURS)
    conv = model.down[0].blocks[0].conv1  # square layer: Xavier's std is sqrt(3) times PyTorch's
    assert torch.count_nonzero(conv.bias) > 0
    assert conv.weight.std().item() == pytest.approx(_xavier_bound(conv.weight) / 3, rel=0.1)
    assert model.conv_out.weight.abs().max() > 1e-3
    ddsm = _small()
    assert ddsm.down[0].blocks[0].conv1.weight.std().item() == pytest.approx(
        _xavier_bound(conv.weight) / math.sqrt(3), rel=0.1)


@pytest.mark.parametrize("fixed", [True, False])
def test_group_norm_groups_at_half_width(fixed):
    torch.manual_seed(0)
    norm = SlimGroupNorm(8, [32], Width(fixed_groups=fixed, block_concat=True))
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    norm.state.value = 0.5
    x = torch.randn(2, 16, 4, 4) * torch.linspace(0.1, 5, 16)[None, :, None, None]
    with torch.no_grad():
        y = norm(x)
        g8 = F.group_norm(x, 8, norm.weight[:16], norm.bias[:16], norm.eps)  # DDSM: 8 groups of 2
        g4 = F.group_norm(x, 4, norm.weight[:16], norm.bias[:16], norm.eps)  # ours: 4 groups of 4
    assert torch.equal(y, g8 if fixed else g4)
    assert not torch.allclose(g8, g4, atol=1e-3)


@pytest.mark.parametrize(("rule", "groups"), [("fixed", {1.0: {8}, 0.5: {8}}), ("scaled", {1.0: {8}, 0.5: {4}})])
def test_every_group_norm_of_the_network_uses_the_rules_groups(monkeypatch, rule, groups):
    model = _small(norm_groups=rule)
    seen: list[int] = []
    group_norm = F.group_norm

    def spy(x, num_groups, *args, **kwargs):
        seen.append(num_groups)
        return group_norm(x, num_groups, *args, **kwargs)

    monkeypatch.setattr(F, "group_norm", spy)
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([3])
    for width, expected in groups.items():
        seen.clear()
        with torch.no_grad(), at_width(model, width):
            model(x, t)
        assert len(seen) == sum(isinstance(m, SlimGroupNorm) for m in model.modules())
        assert set(seen) == expected


@pytest.mark.parametrize("block", [True, False])
def test_concatenated_input_slicing(block):
    torch.manual_seed(0)
    conv = SlimConv2d([32, 16], 24, 3, Width(fixed_groups=True, block_concat=block), padding=1)
    norm = SlimGroupNorm(8, [32, 16], conv.state)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    conv.state.value = 0.5
    x = torch.randn(2, 16 + 8, 5, 5)  # cat(h, skip) at width 0.5
    w, b = conv.weight[:12], conv.bias[:12]
    first = w[:, :24]  # DDSM: the first w (a + b) = 24 input channels as one block
    parts = torch.cat([w[:, :16], w[:, 32:40]], dim=1)  # ours: the first 16 of h and the first 8 of skip
    affine_first = norm.weight[:24], norm.bias[:24]
    affine_parts = (torch.cat([norm.weight[:16], norm.weight[32:40]]), torch.cat([norm.bias[:16], norm.bias[32:40]]))
    with torch.no_grad():
        want, other = (F.conv2d(x, first, b, padding=1), F.conv2d(x, parts, b, padding=1))[:: 1 if block else -1]
        assert torch.equal(conv(x), want) and not torch.allclose(want, other)
        affine = affine_first if block else affine_parts
        assert torch.equal(norm(x), F.group_norm(x, 8, *affine, norm.eps))


@pytest.mark.parametrize("options", [{}, OURS], ids=["ddsm", "ours"])
def test_ddsm_preset_counts_do_not_depend_on_the_options(options):
    with torch.device("meta"):  # shapes only: FLOPs without computing
        model = build_model("ddpm", DDPMUNetConfig(**options), 3, 32)
    assert count_parameters(model) == 35_746_307
    flops = {}
    for width in model.config.widths:
        with at_width(model, width):
            flops[width] = measure_call(model, (3, 32, 32)).flops
    assert flops == {1.0: 12_443_713_536, 0.75: 7_065_231_360, 0.5: 3_198_451_712, 0.25: 843_374_592}


def test_full_width_output_is_the_same_under_every_rule():
    reference = _small(seed=1, init="torch")
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))  # norms start at 1/0: make every weight matter
    state = reference.state_dict()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 40])
    full, half = {}, {}
    for groups in ("fixed", "scaled"):
        for slicing in ("block", "parts"):
            model = _small(norm_groups=groups, concat_slicing=slicing)
            model.load_state_dict(state)
            with torch.no_grad():
                full[groups, slicing] = model(x, t)
                with at_width(model, 0.5):
                    half[groups, slicing] = model(x, t)
    outputs = list(full.values())
    assert all(torch.equal(outputs[0], y) for y in outputs[1:])
    narrow = list(half.values())  # negative control: the rules differ at width 0.5
    assert all(not torch.allclose(a, b) for i, a in enumerate(narrow) for b in narrow[i + 1:])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="init"):
        DDPMUNetConfig(init="xavier")
    with pytest.raises(ConfigError, match="norm_groups"):
        DDPMUNetConfig(norm_groups="per_channel")
    with pytest.raises(ConfigError, match="concat_slicing"):
        DDPMUNetConfig(concat_slicing="interleaved")
    small = {**SMALL, "groups": 32, "widths": (1.0, 0.5)}  # 32 channels x 0.5 = 16: not 32 groups
    with pytest.raises(ConfigError, match=r"widths: 0.5 of 32 channels is 16.0, .*norm_groups 'fixed' keeps 32"):
        DDPMUNetConfig(**small)
    assert DDPMUNetConfig(**small, norm_groups="scaled").norm_groups == "scaled"


def test_a_snapshot_written_before_the_options_loads_as_the_network_it_was(tmp_path):
    """A snapshot whose model config lacks ``init``/``norm_groups``/``concat_slicing`` (written before
    they existed) is read with the values its network computed (``torch``/``scaled``/``parts``), so
    it rebuilds to the same outputs at a narrow width, not to DDSM's slicing of the same weights."""
    from missingu.config import to_dict
    from missingu.models import model_from_meta
    from missingu.snapshot import load_snapshot, save_snapshot

    model = _small(**OURS)
    old = {k: v for k, v in to_dict(model.config).items() if k not in OURS}
    save_snapshot(model, {"arch": "ddpm", "model": old, "image_shape": [3, 8, 8]}, 1, tmp_path / "ema.pt")
    blob = load_snapshot(tmp_path / "ema.pt")
    assert {k: blob["meta"]["model"][k] for k in OURS} == OURS
    rebuilt = model_from_meta(blob["meta"], blob["state_dict"])
    x, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3.0, 7.0])
    with torch.no_grad(), at_width(model, 0.5), at_width(rebuilt, 0.5):
        assert torch.equal(model(x, t), rebuilt(x, t))
    ddsm = model_from_meta({**blob["meta"], "model": {**old, "norm_groups": "fixed", "concat_slicing": "block",
                                                      "init": "ddsm"}}, blob["state_dict"])
    with torch.no_grad(), at_width(model, 0.5), at_width(ddsm, 0.5):  # negative control: DDSM's slicing differs
        assert not torch.allclose(model(x, t), ddsm(x, t))
