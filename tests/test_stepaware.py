"""Step-aware sampling (DDSM): the slimmable DDPM U-Net, strategies, their FLOPs, the sampler,
the search, bad strategies, and the `missingu stepaware` command end to end on a tiny config."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
from torch import nn

from missingu.batches import sandwich_widths, step_generator
from missingu.cli import main
from missingu.config import ConfigError
from missingu.diffusion import Diffusion, DiffusionConfig
from missingu.experiment import parse_experiment
from missingu.importance import ImportanceConfig, sweep, windows_of
from missingu.io import InputFileError
from missingu.measure import count_parameters, measure_call
from missingu.models import ARCHITECTURES, build_model
from missingu.models.ddpm import DDPMUNetConfig, SlimConv2d, SlimGroupNorm, SlimLinear, at_width
from missingu.samplers import SamplerSpec, sample
from missingu.search import search
from missingu.strategies import StepAwareDenoiser, Strategy, strategy_flops, validate, visited_steps


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


@pytest.mark.parametrize("objective", ["single", "ddsm"])
def test_search_improves_on_its_first_generation_and_finds_the_optimum(objective):
    need, cost, evaluate = _toy()
    result = search(12, 4, evaluate, objective=objective, population=10, generations=60, seed=0, flops_weight=1.0)
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


def _genes_problem(genes: int, options: int):
    from pymoo.core.problem import Problem

    return Problem(n_var=genes, n_obj=1, xl=0, xu=options - 1, vtype=int)


def _cross(operator, a, b, matings: int = 200):
    """Children of ``matings`` pairings of genomes ``a`` and ``b`` (2 x matings, genes)."""
    import numpy as np
    from pymoo.core.population import Population

    pop = Population.new("X", np.array([a, b]))
    children = operator.do(_genes_problem(len(a), 10), pop, np.array([[0, 1]] * matings),
                           random_state=np.random.default_rng(0))
    return children.get("X")


@pytest.mark.parametrize("objective", ["single", "pareto", "ddsm"])
def test_crossover_only_exchanges_genes(objective):
    import numpy as np
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.repair.rounding import RoundingRepair

    from missingu.search import crossover

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40), rng.integers(5, 10, 40)  # disjoint values: a gene names its parent
    children = _cross(crossover(objective), a, b)
    assert np.all((children == a) | (children == b))  # every gene one of its parents' at that position
    switches = (np.diff((children == a).astype(int), axis=1) != 0).sum(axis=1)
    if objective == "ddsm":  # single point: one parent's genes up to the cut, the other's after it
        assert switches.max() == 1 and (switches == 1).mean() > 0.8  # (10%: no crossover, pymoo's prob 0.9)
    else:  # uniform: each gene from either parent
        assert switches.mean() > 10 and abs((children == a).mean() - 0.5) < 0.05
    # negative control: SBX on choice indices (the old operator) makes values neither parent has
    sbx = _cross(SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()), a, b)
    assert not np.all((sbx == a) | (sbx == b))


def test_uniform_reset_mutation_draws_every_choice_with_the_set_probability():
    import numpy as np
    from pymoo.core.population import Population

    from missingu.search import UniformReset

    genes, options, individuals, p = 50, 10, 400, 0.2
    problem = _genes_problem(genes, options)
    X = np.zeros((individuals, genes), dtype=int)
    out = UniformReset(prob_var=p).do(problem, Population.new("X", X), random_state=np.random.default_rng(1)).get("X")
    changed = out[out != 0]
    # a reset draws all 10 values, its own included: 0.2 x 9/10 of the 20,000 genes change (sd 0.003)
    assert (out != 0).mean() == pytest.approx(p * (options - 1) / options, abs=0.012)
    counts = np.bincount(changed, minlength=options)[1:]
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()  # uniform over the rest
    assert out.dtype.kind == "i" and out.min() >= 0 and out.max() <= options - 1
    # the default: min(0.5, 1 / genes); and DDSM's 0.001 leaves almost every gene alone
    default = UniformReset().do(problem, Population.new("X", X), random_state=np.random.default_rng(2)).get("X")
    assert (default != 0).mean() == pytest.approx((1 / genes) * 0.9, abs=0.006)
    ddsm = UniformReset(prob_var=0.001).do(problem, Population.new("X", X), random_state=np.random.default_rng(3))
    assert (ddsm.get("X") != 0).mean() < 0.003


def test_first_population_holds_every_uniform_strategy():
    seen = []

    def evaluate(genes):
        seen.append(list(genes))
        return float(sum(genes)), 1.0

    rule = [0, 1, 2, 3, 0, 1, 2, 3]
    search(8, 4, evaluate, objective="ddsm", population=6, generations=1, seed=0)
    first = seen[:6]
    assert all([i] * 8 in first for i in range(4)) and rule not in first
    assert sum(len(set(g)) > 1 for g in first) == 2  # the rest random (DDSM's first population)
    seen.clear()
    search(8, 4, evaluate, objective="single", population=6, generations=1, seed=0, initial=[rule])
    assert all([i] * 8 in seen[:6] for i in range(4)) and rule in seen[:6]
    with pytest.raises(ConfigError, match="stepaware.population: 3 is fewer than the 4 networks"):
        search(8, 4, evaluate, objective="ddsm", population=3, generations=1)
    with pytest.raises(ConfigError, match="stepaware.objective: unknown objective 'ga'; allowed: ddsm, pareto, single"):
        search(8, 4, evaluate, objective="ga")


def test_importance_windows_cover_every_visited_step_once():
    visited = visited_steps("ddim", 50, 10)
    windows = windows_of(visited, 3)
    assert [len(w) for w in windows] == [4, 3, 3]
    assert sorted(t for w in windows for t in w) == sorted(visited)
    assert windows[0][0] == 0 and all(w[-1] < v[0] for w, v in zip(windows, windows[1:]))  # t increasing
    with pytest.raises(ConfigError, match=r"stepaware.importance.windows: 11 windows over 10 visited steps"):
        windows_of(visited, 11)


def test_importance_sweep_puts_the_network_in_its_window_and_the_full_width_elsewhere():
    visited = visited_steps("ddim", 50, 10)
    cells = sweep(visited, 5, 1.0, [0.5, "cunet"], 50)
    assert [(r["network"], r["window"]) for r, _ in cells] == [(n, w) for n in ("w0.5", "cunet") for w in range(5)]
    covered = {n: [] for n in ("w0.5", "cunet")}
    for row, strategy in cells:
        inside = [t for t in visited if row["t_low"] <= t <= row["t_high"]]
        assert row["steps"] == len(inside) == 2
        network = 0.5 if row["network"] == "w0.5" else "cunet"
        assert all(strategy.steps[t] == (network if t in inside else 1.0) for t in visited)
        validate(strategy, 50, [1.0, 0.5, "cunet"])
        covered[row["network"]] += inside
    assert all(sorted(c) == sorted(visited) for c in covered.values())


def _tiny_study(config, others):
    """The study of a tiny slimmable model on 8x8 images, scored by the Frechet distance of the
    images' row means (8 features) to a fixed reference."""
    from missingu.stats import frechet_batch
    from missingu.stepaware import run_study

    model = _slim()
    reference = torch.randn(256, 8) * 40 + 128

    def features(images):
        return images.double().mean(dim=(1, 3))

    def score(images):
        f = features(images)
        return float(frechet_batch(f[None], reference[None])[0]), f

    return run_study(model, {n: f(model) for n, f in others.items()}, Diffusion(DiffusionConfig(timesteps=50)),
                     SamplerSpec("ddim", "ddim", steps=10), (1, 8, 8), score, config, reference=lambda: reference,
                     log=lambda _: None)


class _SpoiledAt(nn.Module):
    """The full network, but its output pushed far off at the steps ``t`` in ``spoiled``."""

    def __init__(self, model, spoiled):
        super().__init__()
        self.model, self.spoiled = model, spoiled

    def forward(self, x, t):
        with at_width(self.model, 1.0):
            out = self.model(x, t)
        bad = torch.tensor([int(s) in self.spoiled for s in t.tolist()], dtype=out.dtype)[:, None, None, None]
        return out + 4.0 * bad


def test_importance_sweep_finds_the_window_that_matters():
    from missingu.stepaware import StepAwareConfig

    config = StepAwareConfig(model="slim", mix=("toy",), samples=8, batch_size=8, population=4, generations=1,
                             random_baselines=1, objective="single",
                             importance=ImportanceConfig(enabled=True, windows=5, networks=("toy", 0.5)))
    # visited: 0, 5, 11, 16, 22, 27, 33, 38, 44, 49; window 2 holds steps 22 and 27
    study = _tiny_study(config, {"toy": lambda model: _SpoiledAt(model, {22, 27})})
    rows = study.importance
    assert len(rows) == 10 and {(r["network"], r["window"]) for r in rows} == {
        (n, w) for n in ("toy", "w0.5") for w in range(5)}
    toy = {r["window"]: r for r in rows if r["network"] == "toy"}
    assert (toy[2]["t_low"], toy[2]["t_high"]) == (22, 27)
    assert max(toy, key=lambda w: toy[w]["change"]) == 2 and toy[2]["change"] > 0
    assert toy[2]["change_low"] > 0 and toy[2]["change_low"] <= toy[2]["change"] <= toy[2]["change_high"]
    for w in (0, 1, 3, 4):  # negative control: the toy is the full network there, so no change at all
        assert toy[w]["change"] == 0 and toy[w]["quality"] == toy[w]["full_quality"]
    full = next(r for r in study.rows if r["strategy"] == "uniform w1" and r["phase"] == "fresh")
    assert all(r["full_quality"] == full["quality"] and r["samples"] == full["samples"] for r in rows)
    assert all(r["kind"] != "importance" for r in study.rows)  # the sweep stays out of the strategies table


def test_importance_heatmap_is_drawn_from_the_table(tmp_path):
    import pandas as pd

    from missingu.io import write_rows
    from missingu.report import plot_importance_heatmap, read_importance

    rows = [{"window": w, "t_low": 10 * w, "t_high": 10 * w + 5, "steps": 2, "network": n,
             "change": (w + 1) * (2 if n == "w0.25" else 1), "change_low": 0.5 if w else -1.0, "change_high": 9.0}
            for n in ("w0.5", "w0.25") for w in range(3)]
    path = tmp_path / "importance.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read_importance(path)
    grid = plot_importance_heatmap(table, tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert list(grid.index) == ["w0.5", "w0.25"] and list(grid.columns) == [0, 1, 2]
    assert grid.loc["w0.25", 2] == 6 and grid.loc["w0.5", 0] == 1
    write_rows([], tmp_path / "off.csv")  # the sweep off: the study writes its table without rows
    assert read_importance(tmp_path / "off.csv").empty


def test_importance_and_search_settings_are_checked(tiny_config):
    import yaml

    from missingu.stepaware import StepAwareConfig

    schema = yaml.safe_load(open("workflow/schemas/config.schema.yaml"))["properties"]["stepaware"]["properties"]
    imp = schema["importance"]
    assert imp["default"] == {"enabled": False, "windows": 10, "networks": None}
    assert {k: v["default"] for k, v in imp["properties"].items()} == imp["default"]
    assert StepAwareConfig().importance == ImportanceConfig() and not ImportanceConfig().enabled
    cfg = _stepaware_config(tiny_config)  # slim: widths 1.0, 0.5; mix: unet; sampler ddim (5 steps)
    cfg["stepaware"]["importance"] = {"enabled": True, "windows": 5}
    parsed = parse_experiment(cfg).stepaware
    assert parsed.importance_networks((1.0, 0.5)) == [0.5, "unet"]
    cfg["stepaware"]["importance"] = None
    assert not parse_experiment(cfg).stepaware.importance.enabled
    for key, value, message in (
            ("importance", {"enabled": True, "networks": [1.0]},
             "stepaware.importance.networks: 1.0 is neither a narrower width of 'slim' nor a stepaware.mix model; "
             "allowed: 0.5, unet"),
            ("importance", {"enabled": True, "windows": 6},
             "stepaware.importance.windows: 6 windows over the 5 steps 'ddim' visits; allowed: 1 to 5"),
            ("importance", {"enabled": True, "networks": []}, "stepaware.importance.networks: empty"),
            ("importance", {"window": 3}, "stepaware.importance.window: unknown key"),
            ("mutation", 1.5, r"stepaware.mutation: a probability per gene, in \[0, 1\]"),
            ("objective", "nsga3", "stepaware.objective: unknown objective 'nsga3'; allowed: ddsm, pareto, single"),
            ("population", 0, "stepaware.population: must be positive")):
        bad = copy.deepcopy(cfg)
        bad["stepaware"][key] = value
        with pytest.raises(ConfigError, match=message):
            parse_experiment(bad)
    bad = copy.deepcopy(cfg)
    bad["stepaware"].update(objective="ddsm", population=2)
    with pytest.raises(ConfigError, match="stepaware.population: 2 is fewer than the 3 networks"):
        parse_experiment(bad)


def test_work_counts_the_importance_sweep():
    from missingu.stepaware import StepAwareConfig, work

    spec = SamplerSpec("ddim", "ddim", steps=10)
    off = work(StepAwareConfig(samples=8), spec, 50, 3, (1, 8, 8)).forward_values
    on = work(StepAwareConfig(samples=8, importance=ImportanceConfig(enabled=True, windows=5)), spec, 50, 3,
              (1, 8, 8)).forward_values
    assert on - off == 5 * 2 * 8 * 10 * 64  # windows x networks but the full x samples x calls x values
    one = work(StepAwareConfig(samples=8, importance=ImportanceConfig(enabled=True, windows=5, networks=("unet",))),
               spec, 50, 3, (1, 8, 8)).forward_values
    assert one - off == 5 * 1 * 8 * 10 * 64


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


def test_named_studies_are_the_section_with_their_own_keys_on_top(tiny_config):
    cfg = _stepaware_config(tiny_config)
    cfg["stepaware"].update(name="widths", mix=[], studies={"mixed": {"mix": ["unet"], "population": 5}})
    exp = parse_experiment(cfg)
    widths, mixed = exp.stepaware.each()
    assert (widths.name, widths.mix, mixed.name, mixed.mix, mixed.population) == ("widths", (), "mixed", ("unet",), 5)
    assert mixed.generations == widths.generations == 2 and widths.studies == mixed.studies == {}
    assert exp.study("mixed") == mixed and exp.study(None).name == "widths"
    assert exp.stepaware_runs() == [("digits", "widths"), ("digits", "mixed")]
    with pytest.raises(ConfigError, match="stepaware study 'other' is not in the config; allowed: widths, mixed"):
        exp.study("other")
    for studies, name, message in (
            ({"mixed": {"mix": ["nope"]}}, "widths", "stepaware.studies.mixed.mix: 'nope' is not another model entry"),
            ({"mixed": {"popul": 3}}, "widths", "stepaware.studies.mixed.popul: unknown key"),
            ({"mixed": {"name": "x"}}, "widths", "stepaware.studies.mixed.name: not allowed in a study"),
            ({"mixed": {"mix": ["unet"], "objective": "ddsm", "population": 2}}, "widths",
             "stepaware.studies.mixed.population: 2 is fewer than the 3 networks"),
            ({"widths": {}}, "widths", "stepaware.studies.widths: the name of this section's own study"),
            ({}, "a/b", r"stepaware.name: study name 'a/b' must be letters, digits, '_' or '-'")):
        bad = copy.deepcopy(cfg)
        bad["stepaware"].update(studies=studies, name=name)
        with pytest.raises(ConfigError, match=message):
            parse_experiment(bad)


def test_stepaware_command_end_to_end(tmp_path, tiny_config, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    cfg = _stepaware_config(tiny_config)
    cfg["stepaware"].update(objective="ddsm", importance={"enabled": True, "windows": 2})
    path.write_text(yaml.safe_dump(cfg))
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
    # published strategies: one that fits (50 steps of this study's networks), one of another step count
    published = tmp_path / "published"
    published.mkdir()
    Strategy((0.5,) * 25 + (1.0,) * 25).save(published / "halves.yaml")
    Strategy((0.5,) * 1000).save(published / "other_length.yaml")
    assert main(["stepaware", "--config", cfg, "--checkpoint", f"slim={tmp_path / 'slim/ema.pt'}",
                 "--checkpoint", f"unet={tmp_path / 'unet/ema.pt'}", "--classifier", str(classifier),
                 "--data", str(train), "--test", str(test), "--out", str(out), "--threads", "1",
                 "--published", str(published)]) == 0
    rows = list(csv.DictReader(out.open()))
    names = {r["strategy"] for r in rows}
    assert {"uniform w1", "uniform w0.5", "unet alone", "full width at low noise", "searched", "random 0",
            "published halves"} <= names
    assert not any("other_length" in name for name in names)
    assert {r["phase"] for r in rows if r["strategy"] == "published halves"} == {"search", "fresh"}
    assert all(r["kind"] == "baseline" for r in rows if r["strategy"] == "published halves")
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
    # the importance sweep: 2 windows over DDIM's 5 visited steps, each narrower network in each
    importance = list(csv.DictReader(out.with_name("stepaware.importance.csv").open()))
    assert [(r["network"], r["window"], r["steps"]) for r in importance] == [
        ("w0.5", "0", "3"), ("w0.5", "1", "2"), ("unet", "0", "3"), ("unet", "1", "2")]
    fresh_full = next(r for r in rows if r["strategy"] == "uniform w1" and r["phase"] == "fresh")
    for r in importance:
        assert float(r["full_quality"]) == pytest.approx(float(fresh_full["quality"]))
        assert float(r["change"]) == pytest.approx(float(r["quality"]) - float(r["full_quality"]))
        assert float(r["change_low"]) <= float(r["change_high"])
        assert (0 < float(r["saving"]) < 1) == (r["network"] == "w0.5")  # the U-Net costs more than w1 here
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
