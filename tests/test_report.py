"""Table formatting of the report helpers."""

from __future__ import annotations

import pandas as pd

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

    from test_pipeline import ROOT

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
