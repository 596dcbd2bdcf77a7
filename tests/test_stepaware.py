"""Step-aware sampling (DDSM): the slimmable DDPM U-Net, strategies, their FLOPs, the sampler,
the search, bad strategies, and the `missingu stepaware` command end to end on a tiny config."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
from torch import nn

from missingu.cli import main
from missingu.config import ConfigError
from missingu.diffusion import Diffusion, DiffusionConfig
from missingu.experiment import parse_experiment
from missingu.io import InputFileError
from missingu.measure import count_parameters, measure_call
from missingu.models import ARCHITECTURES, build_model
from missingu.models.ddpm import DDPMUNetConfig, SlimConv2d, SlimGroupNorm, SlimLinear, at_width
from missingu.samplers import SamplerSpec, sample
from missingu.stepaware import search
from missingu.strategies import StepAwareDenoiser, Strategy, strategy_flops, validate, visited_steps
from missingu.train import sandwich_widths, step_generator


def _slim(preset: str = "tiny", channels: int = 1, size: int = 8, **options) -> nn.Module:
    torch.manual_seed(0)
    entry = ARCHITECTURES["ddpm"]
    model = build_model("ddpm", entry.config_cls(**{**entry.presets[preset], **options}), channels, size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # norms start at 1/0: make every weight matter
    return model.eval()


def _plain_copy(model: nn.Module) -> nn.Module:
    """The same network with every slimmable layer replaced by the plain torch layer holding the
    same weights."""
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, (SlimConv2d, SlimLinear, SlimGroupNorm)):
            if isinstance(module, SlimConv2d):
                new = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                module.padding)
            elif isinstance(module, SlimLinear):
                new = nn.Linear(module.in_features, module.out_features)
            else:
                new = nn.GroupNorm(module.num_groups, module.num_channels)
            new.load_state_dict(module.state_dict())
            parent = plain.get_submodule(name.rsplit(".", 1)[0]) if "." in name else plain
            setattr(parent, name.rsplit(".", 1)[-1], new)
    return plain


def test_ddsm_preset_is_the_ddpm_cifar10_network():
    model = build_model("ddpm", DDPMUNetConfig(), 3, 32)
    assert count_parameters(model) == 35_746_307  # Ho et al.'s CIFAR-10 U-Net: 35.7 M
    flops = {}
    for width in model.config.widths:
        with at_width(model, width):
            flops[width] = measure_call(model, (3, 32, 32)).flops
    # quadratic in the width, as DDSM's 6070 / 3420 / 1520 / 382.5 M multiply-accumulates are
    assert flops[1.0] == pytest.approx(12.44e9, rel=0.01)
    for width in (0.75, 0.5, 0.25):
        assert flops[width] / flops[1.0] == pytest.approx(width**2, rel=0.15)


def test_slimmable_network_at_full_width_equals_the_plain_network():
    model = _slim()
    plain = _plain_copy(model)
    assert not any(isinstance(m, (SlimConv2d, SlimLinear, SlimGroupNorm)) for m in plain.modules())
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 17, 49])
    with torch.no_grad():
        assert torch.equal(model(x, t), plain(x, t))
        with at_width(model, 0.5):
            narrow = model(x, t)
    assert narrow.shape == x.shape and not torch.allclose(narrow, plain(x, t))


def test_width_must_be_one_of_the_networks():
    model = _slim()
    with pytest.raises(ConfigError, match="width: 0.3 is not one of this network's widths; allowed: 1.0, 0.5"):
        model.width = 0.3
    with pytest.raises(ConfigError, match="not a whole number of GroupNorm groups"):
        DDPMUNetConfig(ch=8, ch_mult=(1, 2), attention=("none", "none"), groups=2, widths=(1.0, 0.3))


def test_sandwich_rule_trains_full_smallest_and_one_middle_width():
    model = _slim("digits", size=16)
    picks = [sandwich_widths(model, step_generator(0, k)) for k in range(20)]
    assert all(p[:2] == [1.0, 0.25] and p[2] in (0.75, 0.5) for p in picks)
    assert {p[2] for p in picks} == {0.75, 0.5}
    assert picks == [sandwich_widths(model, step_generator(0, k)) for k in range(20)]  # from the step's seed
    assert sandwich_widths(build_model("unet", ARCHITECTURES["unet"].config_cls(
        **ARCHITECTURES["unet"].presets["tiny"]), 1, 8), step_generator(0, 0)) == [None]


@pytest.mark.parametrize(("kind", "steps"), [("ddpm", 50), ("ddim", 10)])
def test_all_full_width_strategy_reproduces_the_plain_sampler(kind, steps):
    model = _slim()
    d = Diffusion(DiffusionConfig(timesteps=50))
    spec = SamplerSpec(kind, kind, steps=steps)
    plain = sample(model, d, spec, (1, 8, 8), range(4))
    strategy = Strategy.uniform(1.0, 50)
    stepaware = StepAwareDenoiser(strategy, {1.0: model, 0.5: model}, model)
    out = sample(stepaware, d, spec, (1, 8, 8), range(4))
    assert torch.equal(out.images, plain.images)
    assert stepaware.calls[1.0] == len(visited_steps(kind, 50, steps)) and stepaware.calls[0.5] == 0
    # negative control: half width at the noisiest steps changes the samples
    mixed = Strategy.from_visited(visited_steps(kind, 50, steps), [0.5 if t > 25 else 1.0
                                                                  for t in visited_steps(kind, 50, steps)], 50)
    other = sample(StepAwareDenoiser(mixed, {1.0: model, 0.5: model}, model), d, spec, (1, 8, 8), range(4))
    assert not torch.equal(other.images, plain.images)


def test_strategy_flops_are_the_sum_over_its_steps():
    model = _slim()
    flops = {}
    for width in (1.0, 0.5):
        with at_width(model, width):
            flops[width] = measure_call(model, (1, 8, 8)).flops
    visited = visited_steps("ddim", 50, 10)
    strategy = Strategy.from_visited(visited, [1.0 if i % 3 else 0.5 for i in range(len(visited))], 50)
    total, mean = strategy_flops(strategy, flops, visited)
    manual = 0
    for t in visited:
        with at_width(model, strategy.steps[t]):
            manual += measure_call(model, (1, 8, 8)).flops
    assert total == manual and mean == manual / len(visited)


def test_strategy_file_round_trip_and_bad_strategies(tmp_path):
    strategy = Strategy.from_visited([40, 20, 0], [0.5, "cunet", 1.0], 50)
    assert strategy.steps[45] == 0.5 and strategy.steps[25] == "cunet" and strategy.steps[0] == 1.0
    for name in ("s.yaml", "s.json"):
        strategy.save(tmp_path / name)
        assert Strategy.load(tmp_path / name) == strategy
    allowed = [1.0, 0.5, "cunet"]
    validate(strategy, 50, allowed, {1.0: (1, 8, 8), 0.5: (1, 8, 8), "cunet": (1, 8, 8)})
    with pytest.raises(ConfigError, match=r"strategy: 49 entries; needs one per diffusion step \(diffusion.timesteps = 50\)"):
        validate(Strategy(strategy.steps[:49]), 50, allowed)
    with pytest.raises(ConfigError, match=r"strategy.steps\[3\]: unknown network 0.3; allowed: 1.0, 0.5, cunet"):
        validate(Strategy(strategy.steps[:3] + (0.3,) + strategy.steps[4:]), 50, allowed)
    with pytest.raises(ConfigError, match=r"outputs differ in shape \(1.0: \[1, 8, 8\], cunet: \[3, 8, 8\], 0.5"):
        validate(strategy, 50, allowed, {1.0: (1, 8, 8), 0.5: (1, 8, 8), "cunet": (3, 8, 8)})
    (tmp_path / "bad.yaml").write_text("steps: 3\n")
    with pytest.raises(InputFileError, match="needs a 'steps' list"):
        Strategy.load(tmp_path / "bad.yaml")
    (tmp_path / "short.yaml").write_text("timesteps: 50\nsteps: [1.0, 0.5]\n")
    with pytest.raises(InputFileError, match="says timesteps 50 but lists 2 steps"):
        Strategy.load(tmp_path / "short.yaml")
    with pytest.raises(ConfigError, match="sampler kind 'pf_ode' is not supported; allowed: ddpm, ddim"):
        visited_steps("pf_ode", 50, 10)


def _toy():
    """12 genes, 4 options (0 the costliest); gene i is penalised when cheaper than need[i]: the
    optimum takes exactly need[i] everywhere."""
    need = [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3]
    cost = [4.0, 2.25, 1.0, 0.25]

    def evaluate(genes):
        return sum(5.0 for g, n in zip(genes, need) if g > n), sum(cost[g] for g in genes) / len(genes)

    return need, cost, evaluate


def test_search_improves_on_its_first_generation_and_finds_the_optimum():
    need, cost, evaluate = _toy()
    result = search(12, 4, evaluate, population=10, generations=60, seed=0, flops_weight=1.0)
    optimum = sum(cost[n] for n in need) / 12
    assert result.history[-1][0] < result.history[0][0]
    assert result.history[-1][0] == pytest.approx(optimum)
    assert result.best == [need]


def test_pareto_search_returns_a_non_dominated_front():
    _, _, evaluate = _toy()
    result = search(12, 4, evaluate, objective="pareto", population=10, generations=15, seed=0)
    points = result.objectives
    assert len(points) >= 3
    for a in points:
        assert not any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in points)
    assert result.history[-1][0] <= result.history[0][0] and result.history[-1][1] <= result.history[0][1]


def _stepaware_config(tiny_config: dict) -> dict:
    cfg = copy.deepcopy(tiny_config)
    cfg["models"].append({"name": "slim", "arch": "ddpm", "preset": "tiny"})
    cfg["stepaware"] = {"model": "slim", "mix": ["unet"], "sampler": "ddim", "samples": 8, "batch_size": 8,
                        "population": 3, "generations": 2, "random_baselines": 1}
    cfg["evaluate"] = {"classifier": {"steps": 20, "batch_size": 32, "width": 8, "feature_dim": 16}}
    return cfg


def test_stepaware_config_names_a_slimmable_model_and_a_ddpm_or_ddim_sampler(tiny_config):
    cfg = _stepaware_config(tiny_config)
    parse_experiment(cfg)
    for key, value, message in (("model", "unet", "stepaware.model: 'unet' is not a slimmable model entry"),
                                ("mix", ["nope"], "stepaware.mix: 'nope' is not another model entry"),
                                ("sampler", "pf_ode", "stepaware.sampler: 'pf_ode' is not a DDPM or DDIM sampler "
                                                      "entry; allowed: ddpm, ddim")):
        bad = copy.deepcopy(cfg)
        bad["stepaware"][key] = value
        with pytest.raises(ConfigError, match=message):
            parse_experiment(bad)


def test_stepaware_command_end_to_end(tmp_path, tiny_config, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_stepaware_config(tiny_config)))
    cfg = str(path)
    train, test = tmp_path / "train.pt", tmp_path / "test.pt"
    assert main(["prepare-data", "--config", cfg, "--out", str(train)]) == 0
    assert main(["prepare-data", "--config", cfg, "--split", "test", "--out", str(test)]) == 0
    for model in ("slim", "unet"):
        assert main(["train", "--config", cfg, "--model", model, "--data", str(train), "--out-dir",
                     str(tmp_path / model), "--no-progress", "--threads", "1"]) == 0
    classifier = tmp_path / "classifier.pt"
    assert main(["train-classifier", "--config", cfg, "--data", str(train), "--test", str(test), "--out",
                 str(classifier), "--no-progress"]) == 0
    out = tmp_path / "sa" / "stepaware.csv"
    assert main(["stepaware", "--config", cfg, "--checkpoint", f"slim={tmp_path / 'slim/ema.pt'}",
                 "--checkpoint", f"unet={tmp_path / 'unet/ema.pt'}", "--classifier", str(classifier),
                 "--data", str(train), "--test", str(test), "--out", str(out), "--threads", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    names = {r["strategy"] for r in rows}
    assert {"uniform w1", "uniform w0.5", "unet alone", "full width at low noise", "searched", "random 0"} <= names
    full = next(r for r in rows if r["strategy"] == "uniform w1")
    half = next(r for r in rows if r["strategy"] == "uniform w0.5")
    assert float(full["saving"]) == 0 and 0.5 < float(half["saving"]) < 0.9
    assert all(float(r["quality"]) >= 0 and r["quality_floor"] for r in rows)
    searched = Strategy.load(out.with_name("stepaware.strategy.yaml"))
    validate(searched, 50, [1.0, 0.5, "unet"])
    record = json.loads(out.with_name("stepaware.json").read_text())
    assert set(record["networks"]) == {"w1", "w0.5", "unet"}
    history = list(csv.DictReader(out.with_name("stepaware.history.csv").open()))
    assert len(history) == 2
    # the searched strategy samples through `missingu sample`; a strategy of the wrong length is refused first
    samples = tmp_path / "sa" / "samples.pt"
    args = ["sample", "--config", cfg, "--checkpoint", str(tmp_path / "slim/ema.pt"), "--sampler", "ddim",
            "--mix", f"unet={tmp_path / 'unet/ema.pt'}", "--num-samples", "3", "--no-progress", "--out", str(samples)]
    assert main([*args, "--strategy", str(out.with_name("stepaware.strategy.yaml"))]) == 0
    assert torch.load(samples, weights_only=True)["images"].shape == (3, 1, 8, 8)
    short = tmp_path / "short.yaml"
    Strategy(searched.steps[:10]).save(short)
    samples.unlink()
    assert main([*args, "--strategy", str(short)]) == 1
    assert "strategy: 10 entries; needs one per diffusion step (diffusion.timesteps = 50)" in capsys.readouterr().err
    assert not samples.exists()
