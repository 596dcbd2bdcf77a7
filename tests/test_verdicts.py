"""Verdicts with known truths, on Gaussian features (no networks): the sizes of the embedded default
(64 classifier features, 36 samples per model, a reference of about 180 unseen real images).

A generator is a Gaussian ``N(delta, I)`` in feature space against real features ``N(0, I)``: its
true Frechet distance is ``||delta||^2``. Each test states the truth and the most often a verdict
may miss it; each fails on the rule this replaced (a bias used as a noise band, point estimates,
scores that chose the strategy they judge, claimed sizes ignored, a NaN floor)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from missingu.report.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    cost_verdict,
    decide,
    merge_claims,
    own_setting_counts,
    setting_of,
)
from missingu.report.quality import comparable_verdict, quality_claims
from missingu.report.stepaware import beats_random_verdict, saving_verdict
from missingu.stats import Interval, fd_infinity, frechet_batch, paired_bootstrap

D, N, M = 64, 36, 180
CLAIMS = {"tolerance": 0.05, "level": 0.95, "resamples": 200, "seed": 0}


def gaussian(n: int, true_fd: float, g: torch.Generator) -> torch.Tensor:
    """``n`` features of a generator whose true Frechet distance to ``N(0, I)`` is ``true_fd``."""
    shift = math.sqrt(true_fd / D)
    return torch.randn(n, D, generator=g, dtype=torch.float64) + shift


def test_the_rule_on_both_sides_of_a_threshold():
    assert decide(Interval(0.1, 0.0, 0.2), 0.3, "below") == REPRODUCED
    assert decide(Interval(0.5, 0.4, 0.6), 0.3, "below") == NOT_REPRODUCED
    assert decide(Interval(0.3, 0.2, 0.4), 0.3, "below") == INCONCLUSIVE
    assert decide(Interval(0.1, 0.05, 0.2), 0.0, "above") == REPRODUCED
    assert decide(Interval(0.1, math.nan, math.nan), 0.0, "above") == INCONCLUSIVE  # no interval: no verdict
    # cost ratios: within the claim; surely cheaper but by less; surely not cheaper; straddling
    assert cost_verdict(Interval.exact(0.2), 0.25, 0.05) == REPRODUCED
    assert cost_verdict(Interval.exact(0.5), 0.25, 0.05) == PARTLY
    assert cost_verdict(Interval.exact(1.2), 0.25, 0.05) == NOT_REPRODUCED
    assert cost_verdict(Interval(0.8, 0.6, 1.1), 0.7, 0.05) == INCONCLUSIVE
    assert cost_verdict(Interval(0.9, 0.85, 0.95), None, 0.05) == REPRODUCED  # direction only ("less memory")


def test_a_degraded_generator_is_never_comparable():
    """True FD 46 against a perfect U-Net at the default's sizes, 100 seeds: 0 "reproduced" allowed
    (the old rule passed it in 3 of 3: differences 27-32 under a 'floor' of 44-45, its bias)."""
    verdicts = []
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        reference, unet, cunet = gaussian(M, 0, g), gaussian(N, 0, g), gaussian(N, 46, g)
        verdicts.append(comparable_verdict(reference, cunet, unet, {**CLAIMS, "seed": seed})[0])
    assert REPRODUCED not in verdicts
    assert verdicts.count(NOT_REPRODUCED) > 80  # and the interval sees it, mostly


def test_identical_generators_are_comparable_at_large_n_and_never_refuted_at_36():
    large = []
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        reference, unet, cunet = gaussian(3000, 0, g), gaussian(3000, 20, g), gaussian(3000, 20, g)
        large.append(comparable_verdict(reference, cunet, unet, {**CLAIMS, "seed": seed})[0])
    assert large.count(REPRODUCED) == len(large), large
    small = []
    for seed in range(100):
        g = torch.Generator().manual_seed(1000 + seed)
        reference, unet, cunet = gaussian(M, 0, g), gaussian(N, 5, g), gaussian(N, 5, g)
        small.append(comparable_verdict(reference, cunet, unet, {**CLAIMS, "seed": seed})[0])
    assert small.count(NOT_REPRODUCED) <= 5, small
    assert set(small) <= {REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED}


def test_in_the_null_case_the_search_does_not_beat_random():
    """Every candidate is the same generator: the winner of 10 candidates on the search's seeds,
    re-evaluated on fresh ones against 3 random strategies, "beats random" in at most 5% of seeds
    (scoring the winner on the seeds that chose it did so about 18 times in 20)."""
    wins, curse = 0, 0
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        reference = gaussian(M, 0, g)
        candidates = [gaussian(N, 10, g) for _ in range(10)]
        randoms_search = [gaussian(N, 10, g) for _ in range(3)]
        fd = [float(frechet_batch(c[None], reference[None])[0]) for c in candidates]
        best_random = min(float(frechet_batch(r[None], reference[None])[0]) for r in randoms_search)
        curse += min(fd) < best_random  # the old check: the selected score against one draw each
        fresh_searched, fresh_randoms = gaussian(N, 10, g), [gaussian(N, 10, g) for _ in range(3)]
        words = beats_random_verdict(reference, fresh_searched, fresh_randoms, {**CLAIMS, "seed": seed})[0]
        wins += words == REPRODUCED
    assert wins <= 2, wins
    assert curse >= 25  # the bias the fresh seeds remove is real


def test_a_small_saving_does_not_reproduce_a_large_claim():
    assert saving_verdict(0.05, 0.49 - 0.05, REPRODUCED) == NOT_REPRODUCED
    assert saving_verdict(0.48, 0.49 - 0.05, REPRODUCED) == REPRODUCED
    assert saving_verdict(0.48, 0.49 - 0.05, INCONCLUSIVE) == INCONCLUSIVE
    assert saving_verdict(0.48, 0.49 - 0.05, NOT_REPRODUCED) == NOT_REPRODUCED


def test_the_fid_path_gives_a_verdict_without_a_floor(tmp_path):
    """With FID computed the real-vs-real cell is empty (NaN): the verdict still follows the
    interval (it was 'partly' whatever the data, NaN compared false)."""
    g = torch.Generator().manual_seed(0)
    reference = gaussian(M, 0, g).float()
    rows = []
    for model, arch, true_fd in (("unet", "unet", 5.0), ("cunet", "cunet", 5.0)):
        path = tmp_path / f"{model}.features.pt"
        feats = gaussian(N, true_fd, g).float()
        torch.save({"fid_samples": feats.half(), "fid_reference": reference.half(), "samples": feats,
                    "reference": reference}, path)
        fid = float(frechet_batch(feats.double()[None], reference.double()[None])[0])
        rows.append({"dataset": "digits", "sampler": "ddim10", "kind": "ddim", "model": model, "arch": arch,
                     "preset": "digits", "num_samples": N, "fid": fid, "classifier_fd": fid,
                     "classifier_fd_real": float("nan"), "device": "cpu", "features": str(path)})
    table = quality_claims(pd.DataFrame(rows), {**CLAIMS, "claims": [
        {"id": "q", "source": "s", "claim": "c", "quality": "comparable"}]})
    row = table.iloc[0]
    assert row["verdict"] in (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED)
    assert row["metric"].startswith("FID") and pd.notna(row["low"]) and pd.notna(row["high"])


def test_settings_and_the_order_of_the_merged_table():
    claim = {"id": "x", "source": "s", "claim": "c",
             "setting": {"architectures": "paper", "shapes": ["3x64x64"], "datasets": ["celeba"]}}
    assert setting_of(claim, architectures={"unet": "paper", "cunet": "draft"}, shape="3x64x64") == "own"
    stand_in = setting_of(claim, architectures={"unet": "digits", "cunet": "digits"}, shape="1x16x16", dataset="digits")
    assert stand_in.startswith("stand-in: ") and "digits" in stand_in and "1x16x16" in stand_in
    stage_a = pd.DataFrame([{"claim_id": "x", "source": "s", "claim": "c", "setting": stand_in, "verdict": REPRODUCED}])
    stage_b = pd.DataFrame([{"claim_id": "x", "source": "s", "claim": "c", "setting": "own", "verdict": PARTLY}])
    merged = merge_claims({"claims": [claim, {"id": "y", "source": "s", "claim": "d", "needs": "a GPU"}]},
                          {"quality": stage_a, "efficiency": stage_b})
    assert list(merged["setting"].fillna("")) == ["own", stand_in, ""]  # own first; y: its status row
    assert merged["verdict"].iloc[2] == "not measured yet (needs: a GPU)"
    assert own_setting_counts(merged) == {PARTLY: 1}  # a stand-in's "reproduced" is not counted


def test_interval_helpers():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    interval = paired_bootstrap(lambda x, y: (x - y).mean(), a + 1, a, resamples=100)
    assert interval.estimate == 1 and interval.low == interval.high == 1  # a constant difference
    wide = Interval(0.5, 0.0, 1.0, n=100)
    assert wide.samples_to_resolve(0.25) == 400 and wide.samples_to_resolve(0.5) is None
    g = torch.Generator().manual_seed(0)
    reference, features = gaussian(400, 0, g), gaussian(400, 20, g)
    assert fd_infinity(reference, features[:100]) is None  # below twice the dimension (64)
    assert fd_infinity(reference, features) == pytest.approx(20, abs=6)  # the bias (several units) removed
