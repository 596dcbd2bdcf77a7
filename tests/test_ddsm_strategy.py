"""DDSM's published CIFAR-10 strategy (config/strategies/ddsm_cifar10.yaml, from EnVision-Research/DDSM
eval/search.txt): it loads and validates, steps are oriented as there (t = 0 the least noisy, served by
the full width), it saves 48.5% of the full width's FLOPs per call under our counting (48.96% with
DDSM's MAC table), `published` offers it where it applies, and `missingu sample --strategy` takes it."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from missingu.cli import main
from missingu.config import ConfigError
from missingu.diffusion import Diffusion
from missingu.experiment import parse_experiment, run_meta
from missingu.io import InputFileError
from missingu.measure import measure_call
from missingu.models import ARCHITECTURES, build_model, model_from_spec
from missingu.models.ddpm import at_width
from missingu.samplers import SampleNoise, sample_ddpm
from missingu.snapshot import save_snapshot
from missingu.strategies import (
    PUBLISHED_DIR,
    StepAwareDenoiser,
    Strategy,
    published,
    strategy_flops,
    validate,
    visited_steps,
)

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "config" / "strategies" / "ddsm_cifar10.yaml"
WIDTHS = (1.0, 0.75, 0.5, 0.25)
# DDSM's MACs per call of each width (main.py: pre_calculate_macs), in M.
DDSM_MACS = {1.0: 6070, 0.75: 3420, 0.5: 1520, 0.25: 382.5}


@pytest.fixture(scope="module")
def ddsm_flops() -> dict[float, int]:
    """FLOPs of one call of the `ddsm` preset at 3x32x32, per width (a few seconds: measured once)."""
    entry = ARCHITECTURES["ddpm"]
    model = build_model("ddpm", entry.config_cls(**entry.presets["ddsm"]), 3, 32)
    assert tuple(model.config.widths) == WIDTHS
    out = {}
    for width in WIDTHS:
        with at_width(model, width):
            out[width] = measure_call(model, (3, 32, 32)).flops
    return out


def _saving(strategy: Strategy, flops: dict[float, float]) -> float:
    """1 - (mean cost per call of ``strategy`` over DDPM-1000) / (the full width's), in percent."""
    _, mean = strategy_flops(strategy, flops, visited_steps("ddpm", 1000, 1000))
    return 100 * (1 - mean / flops[1.0])


def test_published_strategy_loads_and_validates():
    strategy = Strategy.load(FILE)
    validate(strategy, 1000, list(WIDTHS))
    assert Counter(strategy.steps) == {1.0: 274, 0.75: 181, 0.5: 534, 0.25: 11}
    # search.txt's entry t serves step t (StepAwareUNet: strategy[int(t[0])]): full width at the least
    # noisy steps, 0.5 at the noisiest, a mixed stretch between
    assert set(strategy.steps[:266]) == {1.0} and set(strategy.steps[266:429]) == {0.75}
    assert set(strategy.steps[470:]) == {0.5} and len(set(strategy.steps[429:470])) == 4
    assert yaml.safe_load(FILE.read_text())["source"].startswith("EnVision-Research/DDSM eval/search.txt")
    with pytest.raises(ConfigError, match="strategy: 1000 entries; needs one per diffusion step"):
        validate(strategy, 50, list(WIDTHS))
    with pytest.raises(ConfigError, match=r"strategy.steps\[266\]: unknown network 0.75; allowed: 1.0, 0.5"):
        validate(strategy, 1000, [1.0, 0.5])


def test_published_strategy_saves_48_5_percent(ddsm_flops):
    strategy = Strategy.load(FILE)
    assert abs(_saving(strategy, ddsm_flops) - 48.5) <= 0.1
    assert round(_saving(strategy, DDSM_MACS), 2) == 48.96  # DDSM's own table, from the same counts
    # negative controls: the full width alone saves nothing, the half width alone far more
    assert _saving(Strategy.uniform(1.0, 1000), ddsm_flops) == 0
    assert _saving(Strategy.uniform(0.5, 1000), ddsm_flops) > 70


def test_published_offers_the_strategy_where_it_applies(tmp_path):
    found = published(1000, WIDTHS)
    assert list(found) == ["ddsm_cifar10"] and found["ddsm_cifar10"] == Strategy.load(FILE)
    assert list(published(1000, [*WIDTHS, "cunet"])) == ["ddsm_cifar10"]  # the mixing study may run it too
    assert published(50, WIDTHS) == {}  # another step count
    assert published(1000, [1.0, 0.5]) == {}  # a model without width 0.75 cannot run it
    assert published(1000, WIDTHS, tmp_path / "absent") == {}
    assert list(published(1000, WIDTHS, [PUBLISHED_DIR / "ddsm_cifar10.yaml"])) == ["ddsm_cifar10"]  # files too


def test_strategy_runs_with_t0_the_least_noisy():
    """A DDPM-1000 chain through the strategy calls width 0.5 first (t = 999, pure noise) and the full
    width last (t = 0)."""
    order = []

    def network(width: float):
        def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            order.append(width)
            return torch.zeros_like(x)
        return call

    denoiser = StepAwareDenoiser(Strategy.load(FILE), {w: network(w) for w in WIDTHS})
    sample_ddpm(denoiser, Diffusion(), torch.zeros(1, 1, 2, 2), noise=SampleNoise([0]))
    assert order[0] == 0.5 and order[-1] == 1.0 and Counter(order)[1.0] == 274
    assert denoiser.calls == {1.0: 274, 0.75: 181, 0.5: 534, 0.25: 11}


def test_strategy_file_keys_are_checked(tmp_path):
    data = yaml.safe_load(FILE.read_text())
    for key, value, message in (("note", "x", "unknown key 'note'; allowed: timesteps, steps, source"),
                                ("source", 3, "'source' is free text, got 3")):
        bad = tmp_path / f"{key}.yaml"
        bad.write_text(yaml.safe_dump({**data, key: value}))
        with pytest.raises(InputFileError, match=message):
            Strategy.load(bad)


def _checkpoint(tmp_path: Path, tiny_config: dict, widths: tuple[float, ...]) -> tuple[Path, Path]:
    """A config with 1,000 diffusion steps and an (untrained) slimmable model of ``widths``, and its snapshot."""
    cfg = copy.deepcopy(tiny_config)
    cfg["diffusion"]["timesteps"] = 1000
    cfg["models"] = [{"name": "slim", "arch": "ddpm", "preset": "tiny",
                      "options": {"widths": list(widths), "ch": 16, "groups": 4}}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    experiment = parse_experiment(cfg)
    torch.manual_seed(0)
    model = model_from_spec(experiment.model("slim"), 1, 8)
    save_snapshot(model, run_meta(experiment, None, "slim"), 0, tmp_path / "ema.pt")
    return path, tmp_path / "ema.pt"


def test_sample_command_takes_the_published_file_as_is(tmp_path, tiny_config, capsys):
    config, checkpoint = _checkpoint(tmp_path, tiny_config, WIDTHS)
    out = tmp_path / "samples.pt"
    args = ["sample", "--config", str(config), "--checkpoint", str(checkpoint), "--sampler", "ddim",
            "--num-samples", "2", "--no-progress", "--out", str(out), "--strategy", str(FILE)]
    assert main(args) == 0
    assert torch.load(out, weights_only=True)["images"].shape == (2, 1, 8, 8)
    # negative control: a model without width 0.75 is refused before any sampling
    (tmp_path / "half").mkdir()
    config, checkpoint = _checkpoint(tmp_path / "half", tiny_config, (1.0, 0.5))
    out.unlink()
    assert main([*args[:2], str(config), args[3], str(checkpoint), *args[5:]]) == 1
    assert "strategy.steps[266]: unknown network 0.75; allowed: 1.0, 0.5" in capsys.readouterr().err
    assert not out.exists()
