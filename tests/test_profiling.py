"""Efficiency measurements: structure and consistency (no timing assertions)."""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from missingu.config import ConfigError
from missingu.experiment import parse_experiment
from missingu.measure import count_parameters, measure_call
from missingu.models import ARCHITECTURES, build_model
from missingu.models.ode_block import ODEBlock, SolverConfig
from missingu.profile import plan, run_profile
from missingu.report import MEASURES, claims_table


class _Conv(nn.Module):
    def __init__(self, c_in, c_out, k):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)

    def forward(self, x, t):
        return self.conv(x)


@pytest.mark.parametrize(("c_in", "c_out", "k", "size"), [(3, 8, 3, 16), (16, 4, 1, 8), (2, 2, 7, 5)])
def test_conv_flops_match_the_formula(c_in, c_out, k, size):
    cost = measure_call(_Conv(c_in, c_out, k), (c_in, size, size))
    assert cost.flops == 2 * c_out * size * size * c_in * k * k  # 2 FLOPs per multiply-accumulate
    assert cost.macs == cost.flops / 2 and cost.nfe is None


class _Block(nn.Module):
    def __init__(self, solver):
        super().__init__()
        self.block = ODEBlock(8, time_dim=None, groups=4, solver=solver)

    @property
    def nfe(self):
        return self.block.nfe

    def forward(self, x, t):
        return self.block(x, None)


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint"])
def test_ode_block_flops_scale_with_nfe(method):
    costs = {n: measure_call(_Block(SolverConfig(method, n)), (8, 6, 6)) for n in (1, 2, 4)}
    per_eval = costs[1].flops / costs[1].nfe
    for n, cost in costs.items():
        assert cost.nfe == {"rk4": 4, "euler": 1, "midpoint": 2}[method] * n
        assert cost.flops == cost.nfe * per_eval


def test_dopri5_flops_follow_its_measured_nfe():
    block = _Block(SolverConfig("dopri5", rtol=1e-6, atol=1e-6))
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    reference = measure_call(_Block(SolverConfig("euler", 1)), (8, 6, 6)).flops
    cost = measure_call(block, (8, 6, 6))
    assert cost.nfe > 6 and cost.flops == cost.nfe * reference


def test_parameter_counts():
    model = build_model("unet", ARCHITECTURES["unet"].config_cls(**ARCHITECTURES["unet"].presets["tiny"]), 1, 8)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    model.init_conv.requires_grad_(False)
    frozen = sum(p.numel() for p in model.init_conv.parameters())
    assert count_parameters(model, trainable_only=True) == total - frozen


# fvcore counts multiply-accumulates; its default handles also count GroupNorm and up-sampling,
# which torch's FlopCounterMode does not count (element-wise work). Those are excluded here.
FVCORE_SKIPPED_BY_TORCH = ("aten::group_norm", "aten::upsample_nearest2d", "aten::upsample_bilinear2d")


@pytest.mark.parametrize(("arch", "preset", "shape"), [("unet", "digits", (1, 16, 16)), ("cunet", "digits", (1, 16, 16))])
def test_flops_agree_with_fvcore(arch, preset, shape):
    from fvcore.nn import FlopCountAnalysis

    a = ARCHITECTURES[arch]
    model = build_model(arch, a.config_cls(**a.presets[preset]), shape[0], shape[1]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, (torch.randn(1, *shape), torch.tensor([500.0])))
        for op in FVCORE_SKIPPED_BY_TORCH:
            analysis.set_op_handle(op, None)
        analysis.unsupported_ops_warnings(False)
        fvcore_flops = 2 * analysis.total()
    assert measure_call(model, shape).flops == pytest.approx(fvcore_flops, rel=0.05)


def test_profile_rows(tiny_config, tmp_path):
    tiny_config["profile"] = {"shapes": [[1, 8, 8], [3, 8, 8]], "batch_sizes": [1, 2], "warmup": 1, "repeats": 2,
                              "sample_batch": 2, "memory_batch": 2,
                              "samplers": [{"name": "ddim5", "kind": "ddim", "steps": 5}]}
    cfg = parse_experiment(tiny_config)
    rows = run_profile(cfg, torch.device("cpu"), plan(cfg), tmp_path / "journal.jsonl")
    # the papers' architectures at the papers' shapes, counted (no timing) in every profile
    counted = {(r["model"], r["shape"]): r for r in rows if r["variant"] == "count"}
    assert counted[("unet:paper", "3x64x64")]["params_total"] == 35_710_339
    assert counted[("cunet:draft", "3x64x64")]["params_total"] == 8_811_875
    assert "latency_ms_b1" not in counted[("ddpm:ddsm@w0.5", "3x32x32")]
    base = [r for r in rows if r["variant"] == "base"]
    assert all(len(r["latency_repeats_ms_b1"].split()) == 2 for r in base)  # every repeat kept, for intervals
    assert {(r["model"], r["shape"]) for r in base} == {(m, s) for m in ("unet", "cunet") for s in ("1x8x8", "3x8x8")}
    for r in base:
        assert r["device"] == "cpu" and r["torch"] == torch.__version__ and r["device_name"]
        assert r["latency_ms_b1"] > 0 and r["latency_ms_b2"] > 0 and r["sample_s_ddim5"] > 0
        assert r["sample_calls_ddim5"] == 5 and r["train_step_mib"] >= 0
        assert r["macs_per_call"] * 2 == r["flops_per_call"]
    cunet = next(r for r in base if r["model"] == "cunet")
    assert cunet["ode_evals_per_call"] == 12 and "train_step_mib_adjoint" in cunet
    variants = {r["variant"] for r in rows if r["model"] == "cunet"} - {"base"}
    assert {"augmented_first_order", "no_attention", "rk4_2", "rk4_4", "euler_4", "dopri5"} <= variants
    rk4_4 = next(r for r in rows if r["variant"] == "rk4_4" and r["shape"] == "1x8x8")
    assert rk4_4["ode_evals_per_call"] == 4 * cunet["ode_evals_per_call"]


def _claims():
    from pathlib import Path

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "config/paper_claims.yaml").read_text())


def test_claims_file_lists_every_claim_with_a_source_and_a_way_to_test_it():
    claims = _claims()
    ids = [c["id"] for c in claims["claims"]]
    assert len(ids) == len(set(ids))
    for claim in claims["claims"]:
        assert claim["source"] in claims["sources"], claim["id"]
        ways = [key for key in ("measure", "tested_by", "denoise", "quality", "stepaware", "needs") if key in claim]
        assert len(ways) == 1, claim["id"]
        if "stepaware" in claim:
            assert claim["stepaware"] in ("widths", "saving", "ddim", "random", "mix"), claim["id"]
            assert (claim["stepaware"] == "widths") == ("claimed_ratios" in claim), claim["id"]
        if "measure" in claim:
            assert claim["measure"] in MEASURES and "claimed_ratio" in claim, claim["id"]
        if "denoise" in claim:
            assert claim["denoise"] in ("better", "comparable", "stronger_at_high_noise", "draft"), claim["id"]
            assert claim["metric"] in ("psnr", "ssim", "lpips") and ("sigma" in claim) == (claim["denoise"] == "draft")
    text = " ".join(c["claim"] for c in claims["claims"])
    for number in ("1/4", "75%", "30%", "up to 30%", "up to 70%", "up to 80%", "33.29", "27.56", "26.77", "3.552",
                   "6.039", "5.289", "6.249", "24.71", "12.14 / 8.84 / 3.04 / 0.38", "6.84", "0.765", "8,811,875",
                   "2.83", "7.21", "49%", "61%", "59%", "71%", "76%", "7.73"):
        assert number in text, number


def test_claims_table_verdicts():
    row = {"device_name": "cpu", "variant": "base", "shape": "3x64x64", "weights": "init"}
    slow, fast = " ".join(["10"] * 9 + ["11"]), " ".join(["8"] * 9 + ["7.5"])
    profile = pd.DataFrame([
        {**row, "model": "unet", "arch": "unet", "preset": "paper", "params_total": 100, "flops_per_call": 100,
         "latency_ms_b1": 10.0, "latency_repeats_ms_b1": slow, "sample_s_ddpm": 2.0, "train_step_mib": 100.0},
        {**row, "model": "cunet", "arch": "cunet", "preset": "paper", "params_total": 20, "flops_per_call": 50,
         "latency_ms_b1": 8.0, "latency_repeats_ms_b1": fast, "sample_s_ddpm": 1.0, "train_step_mib": 50.0},
    ])
    table = claims_table(profile, _claims())
    first = table.drop_duplicates("claim_id").set_index("claim_id")
    assert first.loc["parameters_quarter", "verdict"] == "reproduced"
    assert math.isclose(first.loc["parameters_quarter", "measured"], 0.2)
    assert first.loc["parameters_quarter", "setting"] == "own"
    assert first.loc["flops_30", "verdict"] == "partly" and first.loc["flops_30", "detail"] == (
        "50.0% of the U-Net's FLOPs per call; claimed 30%")
    latency = table[(table["claim_id"] == "faster_30") & table["metric"].str.startswith("time per call")].iloc[0]
    assert latency["verdict"] == "partly" and latency["low"] <= 0.8 <= latency["high"] and latency["n"] == 10
    sampling = table[(table["claim_id"] == "faster_30") & table["metric"].str.startswith("time to sample")].iloc[0]
    assert sampling["verdict"] == "inconclusive" and "one timed run" in sampling["detail"]  # no repeats: no interval
    assert first.loc["less_memory", "verdict"] == "reproduced"
    assert latency["weights"] == "initial" and latency["device"] == "cpu"
    assert set(table["claim_id"]) == {c["id"] for c in _claims()["claims"] if "measure" in c}  # only its own claims
    # a time ratio whose repeats straddle the claim is inconclusive, not a verdict on the median
    profile.loc[1, "latency_repeats_ms_b1"] = " ".join(["6", "9", "7", "10", "8", "11", "6.5", "9.5"])
    again = claims_table(profile, _claims())
    row = again[(again["claim_id"] == "faster_30") & again["metric"].str.startswith("time per call")].iloc[0]
    assert row["verdict"] == "inconclusive" and "would resolve it" in row["detail"]
    profile.loc[1, "preset"] = "digits"
    stand_in = claims_table(profile, _claims())
    assert stand_in["setting"].str.startswith("stand-in: ").all()
    assert "cunet digits" in stand_in["setting"].iloc[0]


def test_adaptive_sampling_at_initial_weights_is_not_compared():
    row = {"device_name": "cpu", "variant": "base", "shape": "3x64x64", "weights": "init", "preset": "paper"}
    profile = pd.DataFrame([
        {**row, "model": "unet", "arch": "unet", "sample_s_pf_ode": 2.0, "sample_calls_pf_ode": 300,
         "sample_adaptive_pf_ode": True},
        {**row, "model": "cunet", "arch": "cunet", "sample_s_pf_ode": 0.8, "sample_calls_pf_ode": 120,
         "sample_adaptive_pf_ode": True},
    ])
    table = claims_table(profile, _claims()).set_index("claim_id")
    assert table.loc["faster_30", "verdict"] == "not comparable (adaptive steps at initial weights)"
    assert "300 network calls (U-Net), 120 (cU-Net)" in table.loc["faster_30", "detail"]
    profile["weights"] = "trained"  # trained weights: compared, with the calls shown
    trained = claims_table(profile, _claims()).set_index("claim_id")
    assert not trained.loc["faster_30", "verdict"].startswith("not comparable")
    assert "network calls 300 (U-Net), 120 (cU-Net)" in trained.loc["faster_30", "detail"]


def test_the_papers_architectures_are_counted_in_their_own_setting():
    from missingu.profile import PAPER_COUNTS, count_jobs

    jobs = count_jobs(PAPER_COUNTS)
    assert {(j.arch, j.preset, j.shape) for j in jobs} >= {("unet", "paper", (3, 64, 64)),
                                                          ("cunet", "paper", (3, 64, 64)),
                                                          ("ddpm", "ddsm", (3, 32, 32))}
    assert sorted(j.width for j in jobs if j.arch == "ddpm") == [0.25, 0.5, 0.75, 1.0]
    assert all(j.count_only and j.variant == "count" for j in jobs)


def test_training_memory_is_measured_and_the_adjoint_saves_some():
    """A fresh subprocess per measurement; a large parent process must not hide the step
    (ru_maxrss is inherited across fork, which once made every CPU row read 0 MiB)."""
    from missingu.measure import train_step_memory
    from missingu.models import CUNetConfig

    ballast = torch.ones(300_000_000, dtype=torch.uint8)  # make this process large
    config = CUNetConfig(channels=(32, 32), attention=("none", "none"), solver_steps=8)
    direct = train_step_memory("cunet", config, (1, 32, 32), 16, torch.device("cpu"))
    adjoint = train_step_memory("cunet", CUNetConfig(**{**config.__dict__, "adjoint": True}), (1, 32, 32), 16,
                                torch.device("cpu"))
    assert direct > 5 and 0 < adjoint < direct
    del ballast


QUICK_PROFILE = {"batch_sizes": [1], "warmup": 0, "repeats": 1, "sample_batch": 1, "memory_batch": 1, "counts": [],
                 "samplers": [{"name": "ddim2", "kind": "ddim", "steps": 2}]}


@pytest.fixture
def no_memory_subprocess(monkeypatch):
    """Tests of how rows are kept need no real memory measurement (a subprocess each)."""
    import missingu.profile as profile

    monkeypatch.setattr(profile, "train_step_memory", lambda *args: 1.0)


def test_profile_plan_restrictions(tiny_config):
    tiny_config["profile"] = {**QUICK_PROFILE, "shapes": [[3, 8, 8]]}
    cfg = parse_experiment(tiny_config)
    every = plan(cfg)
    assert {(j.model, j.shape) for j in every if j.variant == "base"} == {
        (m, s) for m in ("unet", "cunet") for s in ((1, 8, 8), (3, 8, 8))}
    assert {j.variant for j in every if j.model == "cunet"} > {"base", "rk4_2"}
    part = plan(cfg, models=["cunet"], shapes=[(3, 8, 8)])
    assert {(j.model, j.shape) for j in part} == {("cunet", (3, 8, 8))} and len(part) > 1
    assert {j.variant for j in plan(parse_experiment({**tiny_config, "profile": {**QUICK_PROFILE, "ablations": False}}))} == {"base"}
    with pytest.raises(ConfigError, match=r"--shapes: 3x64x64 is not profiled by this config; allowed: 1x8x8, 3x8x8"):
        plan(cfg, shapes=[(3, 64, 64)])
    with pytest.raises(ConfigError, match="models: no entry named 'vit'"):
        plan(cfg, models=["vit"])


def test_profile_cut_short_keeps_its_rows_and_a_rerun_measures_only_the_rest(tiny_config, tmp_path, monkeypatch,
                                                                               no_memory_subprocess):
    import missingu.profile as profile_run

    tiny_config["profile"] = {**QUICK_PROFILE, "ablations": False}
    cfg = parse_experiment(tiny_config)
    jobs, journal = plan(cfg), tmp_path / "p.csv.partial.jsonl"
    measured = []
    real = profile_run.profile_model
    monkeypatch.setattr(profile_run, "profile_model", lambda *a, **k: measured.append(a[0]) or real(*a, **k))

    def stop_after_first(rows):
        if len(rows) == 1:
            raise KeyboardInterrupt  # Ctrl-C, a time limit: the run ends after one row

    with pytest.raises(KeyboardInterrupt):
        run_profile(cfg, torch.device("cpu"), jobs, journal, on_row=stop_after_first)
    assert measured == ["unet"] and len(journal.read_text().splitlines()) == 1
    with journal.open("a") as fh:
        fh.write('{"key": "cut sho')  # a line the kill cut in half is ignored
    rows = run_profile(cfg, torch.device("cpu"), jobs, journal)
    assert measured == ["unet", "cunet"] and [r["model"] for r in rows] == ["unet", "cunet"]
    # a changed setting changes every key: nothing is reused
    cfg2 = parse_experiment({**tiny_config, "profile": {**QUICK_PROFILE, "ablations": False, "repeats": 2}})
    run_profile(cfg2, torch.device("cpu"), plan(cfg2), journal)
    assert measured == ["unet", "cunet", "unet", "cunet"]


def test_profile_cli_in_parts_merges_into_one_csv(tiny_config, tmp_path, no_memory_subprocess):
    from missingu.cli import main

    tiny_config["profile"] = {**QUICK_PROFILE, "ablations": False}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "profile.csv"
    assert main(["profile", "--config", str(path), "--out", str(out), "--models", "unet", "--no-progress"]) == 0
    assert list(pd.read_csv(out)["model"]) == ["unet"]
    assert not (tmp_path / "profile.csv.partial.jsonl").exists()
    assert main(["profile", "--config", str(path), "--out", str(out), "--models", "cunet", "--merge",
                 "--no-progress"]) == 0
    merged = pd.read_csv(out)
    assert list(merged["model"]) == ["unet", "cunet"] and merged["latency_ms_b1"].notna().all()
    assert main(["profile", "--config", str(path), "--out", str(out), "--models", "cunet", "--no-progress"]) == 0
    assert list(pd.read_csv(out)["model"]) == ["cunet"]  # without --merge OUT holds this run only
