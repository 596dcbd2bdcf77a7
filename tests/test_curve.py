"""`missingu bench --parts curve`: the networks trained by the pipeline's trainer with the same
data, seed and recipe, a loss per step, and a summary that is the curve's own numbers."""

from __future__ import annotations

import csv
import math
import statistics

import pytest
import yaml

from missingu.cli import main
from missingu.config import ConfigError
from missingu.curve import curve_data, window
from missingu.experiment import parse_experiment
from missingu.specs.bench import BenchConfig, work

# A U-Net the reference Unet can mirror (attention at every level, 4 heads x 32, no dropout).
UNET = {"name": "unet", "arch": "unet", "options": {"dim": 8, "dim_mults": [1, 2], "attention": ["linear", "full"],
                                                   "groups": 4}}


def _bench(tmp_path, tiny_config, *extra: str):
    tiny_config["models"] = [UNET]
    tmp_path.mkdir(exist_ok=True)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "bench.csv"
    assert main(["bench", "--config", str(config), "--out", str(out), "--parts", "curve", "--variants", "eager",
                 "--set", "bench.curve_steps=6", "--set", "bench.train_batch=4", "--threads", "1", *extra]) == 0
    rows = list(csv.DictReader(out.open()))
    return rows, list(csv.DictReader(out.with_suffix(".curve.csv").open()))


def test_curves_of_our_unet_and_the_reference_with_a_summary_of_their_own_numbers(tmp_path, tiny_config):
    pytest.importorskip("denoising_diffusion_pytorch")
    rows, steps = _bench(tmp_path, tiny_config)
    summaries = {r["model"]: r for r in rows if r["part"] == "curve"}
    assert set(summaries) == {"unet", "reference_unet"}
    for model, row in summaries.items():
        assert row["status"] == "ok" and row["data"] == "digits" and row["batch"] == "4", row
        curve = [r for r in steps if r["model"] == model]
        assert [int(r["step"]) for r in curve] == list(range(1, 7))
        assert all(r["device_name"] and r["variant"] == "eager" for r in curve)
        assert {r["arch"] for r in curve} == {"unet" if model == "unet" else "reference"}  # the report's U-Net
        losses = [float(r["loss"]) for r in curve]
        assert all(math.isfinite(v) and v > 0 for v in losses)
        assert float(row["loss_first"]) == pytest.approx(losses[0])  # a tenth of 6 steps: one
        assert float(row["loss_last"]) == pytest.approx(losses[-1])
        assert int(row["steps"]) == 6 and int(row["window"]) == 1
    # The same recipe: the learning rate of the config's train section at every step, for both.
    assert {float(r["lr"]) for r in steps} == {tiny_config["train"]["lr"]}
    ours = [float(r["loss"]) for r in steps if r["model"] == "unet"]
    theirs = [float(r["loss"]) for r in steps if r["model"] == "reference_unet"]
    # Under one seed our U-Net draws the reference's initial weights (module for module), so the
    # same first batch gives the same first loss; later steps part by float rounding only.
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5)
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours != theirs  # two trainings, not one curve written twice (negative control)


def test_a_curve_is_deterministic_and_follows_the_seed(tmp_path, tiny_config):
    args = ("--models", "unet", "--set", "bench.reference=false")
    first = [r["loss"] for r in _bench(tmp_path / "a", tiny_config, *args)[1]]
    again = [r["loss"] for r in _bench(tmp_path / "b", tiny_config, *args)[1]]
    tiny_config["seed"] = 1
    other = [r["loss"] for r in _bench(tmp_path / "c", tiny_config, *args)[1]]
    assert first == again and len(first) == 6
    assert other != first


def test_window_is_a_tenth_of_the_steps_with_its_standard_error():
    losses = [float(v) for v in range(1, 21)]
    assert window(losses, first=True) == (1.5, pytest.approx(statistics.stdev([1, 2]) / math.sqrt(2)), 2)
    assert window(losses, first=False)[:1] == (19.5,)
    mean, se, n = window([3.0, 4.0], first=False)
    assert (mean, n) == (4.0, 1) and math.isnan(se)


def test_curve_data_is_a_dataset_of_the_benchmark_shape_or_a_clear_error(tiny_config):
    cfg = parse_experiment(tiny_config)
    assert curve_data(cfg, None, (1, 8, 8)).name == "digits"
    assert curve_data(cfg, "photos", (3, 16, 16)).size == 16
    with pytest.raises(ConfigError, match=r"no dataset of the config is 3x16x16; name a data source of 3"):
        curve_data(cfg, None, (3, 16, 16))
    with pytest.raises(ConfigError, match=r"bench.curve_data: digits has 1 channel\(s\); the benchmark's shape is 3x8x8"):
        curve_data(cfg, "digits", (3, 8, 8))
    with pytest.raises(ConfigError, match=r"curve_data: unknown data source 'nope'; allowed: .*photos"):
        BenchConfig(curve_data="nope")


def test_the_plan_counts_the_curves_training():
    bench = BenchConfig(parts=("curve",), curve_steps=10, train_batch=4, variants=("eager", "autocast"))
    assert work(bench, (1, 8, 8), 2).train_values == 10 * 4 * 64 * 2 * 2
    assert work(BenchConfig(), (1, 8, 8), 2).train_values == 0
