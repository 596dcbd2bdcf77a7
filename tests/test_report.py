"""Table formatting of the report helpers."""

from __future__ import annotations

import pandas as pd
import torch

from missingu.report import markdown, write_table


def test_markdown_keeps_integers_and_blanks_missing(tmp_path):
    df = pd.DataFrame({"model": ["unet", "cunet"], "calls": [1000, 50], "evals": [float("nan"), 20000.0],
                       "seconds": [80.3012, 4.0]})
    text = markdown(df)
    rows = text.splitlines()
    assert "1,000" in rows[2] and "20,000" in rows[3] and "80.3" in rows[2]
    assert "nan" not in text.lower()
    csv_path, md_path = write_table(df, tmp_path / "t")
    assert pd.read_csv(csv_path).shape == (2, 4)
    assert md_path.read_text().strip() == text


def _denoised(gain_low: float, gain_high: float, noise: float = 0.01, n: int = 40, lpips: bool = True) -> pd.DataFrame:
    """Per-image rows of a U-Net and a cU-Net at sigma 0.1 and 0.3 (both protocols): the cU-Net's
    LPIPS is lower by ``gain_*`` on average, its SSIM equal, plus a little per-image noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for protocol in ("matched", "sweep"):
        for sigma, gain in ((0.1, gain_low), (0.3, gain_high)):
            for i in range(n):
                base = 0.2 + sigma + rng.normal(0, 0.05)
                for model, arch, shift in (("unet", "unet", 0.0), ("cunet", "cunet", -gain)):
                    rows.append({"dataset": "photos", "model": model, "arch": arch, "protocol": protocol,
                                 "sigma": sigma, "image": i, "device_name": "cpu", "psnr": 25.0 + rng.normal(0, noise),
                                 "ssim": 0.8 + rng.normal(0, noise),
                                 "lpips": base + shift + rng.normal(0, noise) if lpips else "not computed: stage x in y"})
    return pd.DataFrame(rows)


def _denoise_claims():
    import yaml

    from pipeline_run import ROOT

    return yaml.safe_load((ROOT / "config/paper_claims.yaml").read_text())


def test_denoising_verdicts_follow_the_paired_differences():
    from missingu.report import denoising_claims

    table = denoising_claims(_denoised(0.02, 0.08), _denoise_claims()).set_index("claim_id")
    assert table.loc["denoising_lpips", "verdict"] == "reproduced"
    assert table.loc["denoising_ssim", "verdict"] == "reproduced"  # equal SSIM is comparable
    assert table.loc["denoising_high_noise", "verdict"] == "reproduced"
    assert table.loc["draft_denoise_eps_0.04", "verdict"] == (
        "not measured: sigma 0.04 is not among denoise.sigmas (sweep protocol)")
    # the negative controls: worse LPIPS, an advantage that shrinks with noise, no difference at all
    worse = denoising_claims(_denoised(-0.05, -0.05), _denoise_claims()).set_index("claim_id")
    assert worse.loc["denoising_lpips", "verdict"] == "not reproduced"
    assert worse.loc["denoising_high_noise", "verdict"] == "not reproduced"
    shrinking = denoising_claims(_denoised(0.08, 0.02), _denoise_claims()).set_index("claim_id")
    assert shrinking.loc["denoising_lpips", "verdict"] == "reproduced"
    assert shrinking.loc["denoising_high_noise", "verdict"] == "not reproduced"
    same = denoising_claims(_denoised(0.0, 0.0), _denoise_claims()).set_index("claim_id")
    assert same.loc["denoising_lpips", "verdict"] == "inconclusive"


def test_denoising_verdict_of_a_metric_not_computed_is_its_note():
    from missingu.report import denoising_claims

    table = denoising_claims(_denoised(0.02, 0.08, lpips=False), _denoise_claims()).set_index("claim_id")
    assert table.loc["denoising_lpips", "verdict"] == "not computed: stage x in y"
    assert table.loc["denoising_ssim", "verdict"] == "reproduced"


def _bench_rows() -> pd.DataFrame:
    """Sampling and call rows of a U-Net and a cU-Net under two variants; the cU-Net is slower
    eager (1.5x) and faster with the fast path (0.6x of the U-Net's best)."""
    rows = []
    for variant, unet_s, cunet_s in (("eager", 0.020, 0.030), ("cuda_graphs", 0.010, 0.006)):
        for model, seconds in (("unet", unet_s), ("cunet", cunet_s)):
            common = {"device_name": "GPU X", "model": model, "arch": model, "preset": "paper", "variant": variant,
                      "shape": "3x64x64", "status": "ok", "batch": 64}
            rows.append({**common, "part": "sample", "sampler": "ddim50", "s_per_image": seconds,
                         "s_per_image_rounds": f"{seconds} {seconds}"})
            rows.append({**common, "part": "call", "ms_per_call": seconds * 1000})
    rows.append({"device_name": "GPU X", "model": "cunet", "arch": "cunet", "preset": "paper", "variant": "autocast",
                 "shape": "3x64x64", "part": "-", "status": "not run: autocast needs a CUDA device; this is cpu"})
    return pd.DataFrame(rows)


def test_bench_table_compares_each_time_with_the_unets_and_keeps_notes():
    from missingu.report import bench_table

    table = bench_table(_bench_rows())
    cunet = table[(table["model"] == "cunet") & (table["part"] == "sample")].set_index("variant")
    assert cunet.loc["eager", "vs_unet"] == 1.5
    assert abs(cunet.loc["cuda_graphs", "vs_unet"] - 0.6) < 1e-12
    assert abs(cunet.loc["eager", "ms"] - 30.0) < 1e-9  # seconds per image shown in ms
    assert table["status"].str.startswith("not run").sum() == 1


def test_speed_claims_pair_eager_and_each_models_fastest():
    from missingu.report import speed_claims

    claims = {"tolerance": 0.05, "noise_band": [0.95, 1.05],
              "claims": [{"id": "faster_30", "source": "s", "claim": "30% faster", "claimed_ratio": 0.7,
                          "measure": "time"},
                         {"id": "flops_30", "source": "s", "claim": "30% FLOPs", "claimed_ratio": 0.3,
                          "measure": "flops"}]}
    table = speed_claims(_bench_rows(), claims).set_index("metric")
    assert list(table["claim_id"].unique()) == ["faster_30"]  # only the time claims
    eager = table.loc["ddim50 time per image, batch 64 (both eager, float32)"]
    assert eager["measured"] == 1.5 and eager["verdict"] == "not reproduced"
    fastest = table.loc["ddim50 time per image, batch 64 (each at its fastest: cunet cuda_graphs, unet cuda_graphs)"]
    assert fastest["measured"] == 0.6 and fastest["verdict"] == "reproduced"
    assert fastest["device"] == "GPU X"


def _study(searched_fd: float, random_fd: float, saving: float = 0.3, samples: int = 200, study: str = "main",
           smallest_fd: float | None = None):
    """A study's fresh-seed rows and features: the full width (true FD 10), the searched strategy and
    one random strategy (true FDs given), and (``smallest_fd``) the narrowest width alone; Gaussian
    features of 16 dimensions."""
    import math

    g = torch.Generator().manual_seed(0)

    def feats(true_fd: float) -> torch.Tensor:
        return torch.randn(samples, 16, generator=g) + math.sqrt(true_fd / 16)

    reference = feats(0)
    strategies = {"uniform w1": feats(10), "searched": feats(searched_fd), "random 0": feats(random_fd)}
    arms = [("uniform w1", "baseline", 10, 0.0, 0.0), ("searched", "search", searched_fd, saving, 0.2),
            ("random 0", "random", random_fd, saving, 0.2)]
    if smallest_fd is not None:
        strategies["uniform w0.25"] = feats(smallest_fd)
        arms.append(("uniform w0.25", "baseline", smallest_fd, 0.9, 0.0))
    rows = []
    for name, kind, fd, save, share in arms:
        for phase in ("search", "fresh"):
            rows.append({"dataset": "digits", "study": study, "strategy": name, "kind": kind, "phase": phase,
                         "samples": samples, "quality": fd, "saving": save, "share_cunet": share, "share_w1": 1 - share})
    return pd.DataFrame(rows), {("digits", study): {"reference": reference, "strategies": strategies}}


def test_stepaware_claims_follow_the_fresh_evaluations():
    from missingu.report import stepaware_claims

    claims = {"tolerance": 0.05, "resamples": 200, "claims": [
        {"id": "saving", "source": "s", "claim": "c", "stepaware": "saving", "claimed_saving": 0.25},
        {"id": "big_saving", "source": "s", "claim": "c", "stepaware": "saving", "claimed_saving": 0.49},
        {"id": "random", "source": "s", "claim": "c", "stepaware": "random"},
        {"id": "mix", "source": "s", "claim": "c", "stepaware": "mix"},
        {"id": "ddim", "source": "s", "claim": "c", "stepaware": "ddim"},
        {"id": "widths", "source": "s", "claim": "c", "stepaware": "widths", "widths": [0.5], "claimed_ratios": [0.25]},
    ]}
    one = {"sampler": {"kind": "ddpm"}, "device": "cpu", "quality": "classifier Frechet distance",
           "model": {"model_name": "slim"}, "networks": {"w1": {"gflops_per_call": 2.0}, "w0.5": {"gflops_per_call": 0.5}}}
    record = {("digits", "main"): one}
    rows, features = _study(searched_fd=10, random_fd=30)
    good = stepaware_claims(rows, record, claims, features).set_index("claim_id")["verdict"]
    assert good["random"] == "reproduced"  # far better than the random strategy, on fresh seeds
    assert good["saving"] in ("reproduced", "inconclusive")  # same quality as the full width, 30% saved
    assert good["big_saving"] == "not reproduced"  # 30% saved is not DDSM's 49%
    assert good["mix"] in ("reproduced", "inconclusive")  # the cU-Net serves a fifth of the steps
    assert good["ddim"].startswith("not measured yet")  # the study sampled with DDPM
    assert good["widths"] == "reproduced"
    # negative controls: quality far worse than the full width's; no better than random
    bad_rows, bad_features = _study(searched_fd=40, random_fd=40)
    bad = stepaware_claims(bad_rows, record, claims, bad_features).set_index("claim_id")["verdict"]
    assert bad["saving"] == "not reproduced" and bad["random"] != "reproduced"
    # the search phase's scores are never the evidence: without fresh rows, nothing is judged
    search_only = stepaware_claims(rows[rows["phase"] == "search"], record, claims, features)
    assert search_only.set_index("claim_id").loc["random", "verdict"].startswith("not measured yet")
    assert stepaware_claims(pd.DataFrame(), record, claims)["verdict"].str.startswith("not measured yet").all()

    # two studies of one network: one row per study and claim, the widths once; the study that mixes
    # a model in stands in for the claims about the slimmable network alone
    mixed_rows, mixed_features = _study(searched_fd=10, random_fd=30, study="mixed")
    two = stepaware_claims(pd.concat([rows, mixed_rows], ignore_index=True),
                           {**record, ("digits", "mixed"): {**one, "settings": {"mix": ["cunet"]}}}, claims,
                           {**features, **mixed_features}).set_index(["claim_id", "study"])
    assert len(two.loc["widths"]) == 1 and len(two.loc["saving"]) == 2
    assert two.loc[("saving", "main"), "setting"] == "own"
    assert two.loc[("saving", "mixed"), "setting"] == "stand-in: mixes in cunet (claim: the slimmable network alone)"
    assert two.loc[("mix", "mixed"), "setting"] == "own"  # the claim is about mixing
    assert two.loc[("saving", "mixed"), "verdict"] == good["saving"]


def test_equal_quality_counts_only_where_the_narrowest_network_reads_worse():
    """A positive control: where the narrowest width alone is not surely worse than the full width
    (an untrained network, too few samples), "the searched strategy is as good" shows nothing."""
    from missingu.report import stepaware_claims

    claims = {"tolerance": 0.05, "resamples": 200, "claims": [
        {"id": "saving", "source": "s", "claim": "c", "stepaware": "saving", "claimed_saving": 0.25}]}
    record = {("digits", "main"): {"sampler": {"kind": "ddpm"}, "device": "cpu", "model": {"model_name": "slim"},
                                   "quality": "classifier Frechet distance", "networks": {}}}

    def judged(smallest_fd):
        rows, features = _study(searched_fd=10, random_fd=30, samples=4000, smallest_fd=smallest_fd)
        return stepaware_claims(rows, record, claims, features).set_index("claim_id").loc["saving"]

    alone = judged(None)
    assert alone["verdict"] == "reproduced"  # as good as the full width, 30% saved
    sees = judged(40)  # the narrowest network reads far worse: the check can see a loss
    assert sees["verdict"] == "reproduced" and "cannot see" not in sees["detail"]
    blind = judged(10)  # the narrowest network reads like the full one: the check sees nothing
    assert blind["verdict"] == "inconclusive"
    assert "cannot see a loss of that size here: uniform w0.25 alone reads 10" in blind["detail"]


def test_bench_curves_compare_each_network_with_the_unet_step_by_step(tmp_path):
    """The curves' paired comparison: the same batch at every step, so a shared noise cancels; a
    shifted curve is seen, an equal one is not."""
    from missingu.report import bench_curve_table, plot_bench_curves

    g = torch.Generator().manual_seed(0)
    steps = torch.arange(1, 201)
    batch_noise = 0.2 * torch.randn(200, generator=g)  # what each step's batch does to every network
    base = 1.0 / steps.sqrt() + batch_noise
    rows = []
    for model, arch, shift in (("unet", "unet", 0.0), ("reference_unet", "reference", 0.0),
                               ("slower", "cunet", 0.05)):
        own = 0.005 * torch.randn(200, generator=g)
        rows += [{"variant": "eager", "model": model, "arch": arch, "step": int(s), "loss": float(v)}
                 for s, v in zip(steps, base + shift + own)]
    table = bench_curve_table(pd.DataFrame(rows)).set_index("model")
    assert table.loc["unet", "steps"] == 200 and pd.isna(table.loc["unet"].get("vs_unet"))
    ref, slower = table.loc["reference_unet"], table.loc["slower"]
    assert ref["low"] <= 0 <= ref["high"] and ref["reading"] == "no difference seen"
    assert slower["reading"] == "higher than the U-Net's" and slower["low"] > 0.04
    # unpaired, the batch noise (0.2 per step over 20 steps) would hide the 0.05 shift
    assert 1.96 * 0.2 * (2 / 20) ** 0.5 > 0.05
    short = bench_curve_table(pd.DataFrame([r for r in rows if r["step"] <= 3])).set_index("model")
    assert short.loc["slower", "reading"] == "too few steps for an interval"  # a tenth of 3 steps: one
    plot_bench_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
