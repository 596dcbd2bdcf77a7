"""The denoising stage's report: the denoising table, metric curves against the reverse step,
example images, and the verdicts on the denoising claims (``denoise:`` in the claims file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import claims as c_
from .common import Record, metric_note, numeric, save_figure

DENOISE_METRICS = ("psnr", "ssim", "lpips")


# Which way is better for each metric, and its words.
BETTER = {"psnr": ("higher", "PSNR (dB)"), "ssim": ("higher", "SSIM"), "lpips": ("lower", "LPIPS")}


def read_denoising(runs: Sequence[Record], part: str = "summary") -> pd.DataFrame:
    """Concatenate what ``missingu denoise`` wrote for every run record: ``part`` names the record's
    path to read (``summary``, ``curves`` or ``images``: the files the ``denoise`` rule declares).
    A metric that was not computed keeps its note as text."""
    frames = [pd.read_csv(run[part], keep_default_na=False, na_values=[""]) for run in runs]
    return pd.concat(frames, ignore_index=True)


def denoising_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, protocol, sigma): each metric's mean and standard deviation over
    the test images at the reported step (matched: the end of the chain; sweep: the best step), the
    noisy input's mean, the start step and the reported step, and the wall time per image."""
    keep = ["dataset", "model", "arch", "protocol", "sigma", "t_start", "step"]
    out = summary[keep].copy()
    for m in DENOISE_METRICS:
        out[m] = summary[m]
        out[f"{m}_std"] = summary[f"{m}_std"]
        out[f"{m}_noisy"] = summary[f"{m}_noisy"]
    out["seconds_per_image"] = summary["seconds_per_image"]
    out["device"] = summary["device_name"]
    return out.sort_values(["dataset", "protocol", "sigma", "model"], kind="stable").reset_index(drop=True)


def plot_denoising_curves(curves: pd.DataFrame, path: str | Path, protocol: str = "sweep", title: str = "") -> None:
    """Each computed metric (rows) against the reverse step, one panel per sigma (columns), every
    model on one axis; mean over the test images with a band of one standard deviation. Metrics
    that were not computed are named below the figure."""
    import matplotlib.pyplot as plt

    part = curves[curves["protocol"] == protocol]
    if part.empty:
        part, protocol = curves[curves["protocol"] == curves["protocol"].iloc[0]], curves["protocol"].iloc[0]
    sigmas = sorted(part["sigma"].unique())
    metrics = [m for m in DENOISE_METRICS if numeric(part[f"{m}_mean"]).notna().any()]
    missing = [f"{m}: {metric_note(part, m)}" for m in DENOISE_METRICS if m not in metrics]
    fig, axes = plt.subplots(len(metrics), len(sigmas), squeeze=False, sharex="col",
                             figsize=(2.8 * len(sigmas), 2.4 * len(metrics) + 0.6))
    for j, sigma in enumerate(sigmas):
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            for model, rows in part[part["sigma"] == sigma].groupby("model", sort=False):
                mean, std = numeric(rows[f"{m}_mean"]), numeric(rows[f"{m}_std"]).fillna(0)
                line = ax.plot(rows["step"], mean, label=model)[0]
                ax.fill_between(rows["step"], mean - std, mean + std, color=line.get_color(), alpha=0.15)
            if i == 0:
                ax.set_title(f"sigma {sigma:g}")
            if j == 0:
                ax.set_ylabel(f"{BETTER[m][1]} ({BETTER[m][0]} is better)", fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel("reverse steps taken")
    axes[0][0].legend(fontsize=8)
    head = f"{title}: " if title else ""
    fig.suptitle(f"{head}{protocol} protocol, mean over test images (band: one standard deviation)", fontsize=10,
                 y=1.02)
    if missing:
        fig.text(0.01, -0.02, "\n".join(missing), fontsize=8, va="top")
    save_figure(fig, path)


def plot_denoising_examples(runs: Sequence[Record], path: str | Path, title: str = "") -> None:
    """One row per sigma: the clean images, the noisy ones and each model's denoised ones (matched
    start), from each run record's ``examples`` file."""
    import matplotlib.pyplot as plt
    import torch
    from torchvision.utils import make_grid

    blobs = [(run["model"], torch.load(run["examples"], weights_only=True)) for run in runs]
    sigmas = blobs[0][1]["sigmas"]
    columns = ["clean", "noisy", *[model for model, _ in blobs]]
    count = max(1, len(blobs[0][1]["examples"][0]["clean"]))
    fig, axes = plt.subplots(len(sigmas), len(columns), squeeze=False,
                             figsize=(0.8 * count * len(columns) + 0.8, 0.9 * len(sigmas) + 0.8))
    for i, sigma in enumerate(sigmas):
        first = blobs[0][1]["examples"][i]
        panels = [first["clean"], first["noisy"], *[blob["examples"][i]["denoised"] for _, blob in blobs]]
        for j, images in enumerate(panels):
            ax = axes[i][j]
            grid = make_grid(images.float(), nrow=max(1, len(images)), padding=1, pad_value=1.0)
            ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j])
            if j == 0:
                ax.set_ylabel(f"sigma {sigma:g}")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def _paired(images: pd.DataFrame, metric: str, cunet: str, unet: str, sigmas: Sequence[float] | None = None):
    """cU-Net minus U-Net per (protocol, sigma, image) of one dataset: mean and standard error."""
    part = images if sigmas is None else images[images["sigma"].isin(sigmas)]
    values = part.assign(value=numeric(part[metric])).pivot_table(
        index=["protocol", "sigma", "image"], columns="model", values="value")
    diff = (values[cunet] - values[unet]).dropna()
    diff = diff[diff.abs() < float("inf")]
    if diff.empty:
        return None, None, 0
    se = float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else float("inf")
    return float(diff.mean()), se, len(diff)


@c_.claim_check("denoise", stage="denoise", table="denoise_vs_claims", words="the denoising task")
def _judge_denoising(claim: c_.Claim, images: pd.DataFrame, claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per dataset and (U-Net, cU-Net) pair (see :func:`denoising_claims`)."""
    kind, metric = claim["denoise"], claim.get("metric", "psnr")
    common = {**c_.claim_fields(claim), "metric": metric}
    rows = []
    for dataset, part in images.groupby("dataset", sort=False):
        note = metric_note(part, metric)
        models = part.drop_duplicates("model")
        for _, u, c in c_.unet_cunet_pairs(models, "dataset"):
            unet, cunet = u["model"], c["model"]
            row = {**common, "dataset": dataset, "pair": f"{cunet} / {unet}", "device": part["device_name"].iloc[0]}
            if note is not None:
                rows.append({**row, "verdict": note})
                continue
            rows.append({**row, **_denoise_verdict(kind, claim, part, metric, cunet, unet, claims["tolerance"])})
    if not rows:
        rows.append({**common, "verdict": c_.not_measured("a U-Net and a cU-Net denoised on one dataset")})
    return rows


def denoising_claims(images: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """Verdicts on the claims with a ``denoise`` key, per dataset and (U-Net, cU-Net) pair, from the
    per-image values of both protocols (paired: the same noisy images for both models).

    * ``better`` (metric): the cU-Net's mean difference is better than the U-Net's by more than two
      standard errors: reproduced; worse by more than two: not reproduced; else inconclusive.
    * ``comparable`` (metric): the difference is within ``tolerance`` of the U-Net's mean, or
      better: reproduced; else not reproduced.
    * ``stronger_at_high_noise`` (metric): the cU-Net's advantage at the largest sigma is above
      its advantage at the smallest and above zero: reproduced; else not reproduced.
    * ``draft`` claims compare at their ``sigma`` (sweep protocol) and are indicative only (the
      draft measured one CelebA image).
    A metric that was not computed gives its note as the verdict."""
    return c_.judge_claims("denoise", images, claims)


def _denoise_verdict(kind: str, claim: c_.Claim, part: pd.DataFrame, metric: str, cunet: str, unet: str,
                     tolerance: float) -> dict[str, Any]:
    sign = 1 if BETTER[metric][0] == "higher" else -1  # advantage = sign * (cU-Net - U-Net)
    if kind == "draft":
        sigma = claim["sigma"]
        part = part[(part["protocol"] == "sweep") & (part["sigma"] == sigma)]
        if part.empty:
            return {"verdict": f"not measured: sigma {sigma} is not among denoise.sigmas (sweep protocol)"}
    if kind == "stronger_at_high_noise":
        low, high = min(part["sigma"]), max(part["sigma"])
        at_low = _paired(part, metric, cunet, unet, [low])[0]
        at_high = _paired(part, metric, cunet, unet, [high])[0]
        if at_low is None or at_high is None:
            return {"verdict": c_.not_measured("finite values at two noise levels")}
        gain_low, gain_high = sign * at_low, sign * at_high
        ok = gain_high > gain_low and gain_high > 0
        return {"measured": round(gain_high - gain_low, 4), "verdict": c_.REPRODUCED if ok else c_.NOT_REPRODUCED,
                "detail": f"cU-Net advantage in {metric}: {gain_low:+.4g} at sigma {low:g}, {gain_high:+.4g} at "
                          f"sigma {high:g}"}
    mean, se, n = _paired(part, metric, cunet, unet)
    if mean is None:
        return {"verdict": c_.not_measured("finite values")}
    gain = sign * mean
    detail = f"cU-Net {'+' if mean >= 0 else ''}{mean:.4g} {metric} vs the U-Net (standard error {se:.2g}, {n} pairs)"
    if kind == "comparable":
        reference = numeric(part[part["model"] == unet][metric]).replace([float("inf")], pd.NA).dropna().mean()
        ok = gain >= -tolerance * abs(float(reference))
        return {"measured": round(mean, 4), "verdict": c_.REPRODUCED if ok else c_.NOT_REPRODUCED,
                "detail": detail + f"; comparable: within {tolerance:.0%} of the U-Net's {float(reference):.4g}"}
    if gain > 2 * se:
        words = c_.REPRODUCED
    elif gain < -2 * se:
        words = c_.NOT_REPRODUCED
    else:
        words = c_.INCONCLUSIVE
    if kind == "draft":
        words += " (indicative: the draft measured one CelebA image)"
    return {"measured": round(mean, 4), "verdict": words, "detail": detail}

