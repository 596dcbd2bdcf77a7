"""The denoising stage's report: the denoising table, metric curves against the reverse step,
example images, and the verdicts on the denoising claims (``denoise:`` in the claims file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..stats import Interval, paired_bootstrap
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


def _advantages(part: pd.DataFrame, metric: str, cunet: str, unet: str, sign: int) -> pd.DataFrame:
    """The cU-Net's advantage ``sign x (cU-Net - U-Net)`` per image (rows) and (protocol, sigma)
    (columns): both models denoised the same noisy images, so an image is the paired unit; values
    that are not finite (PSNR of an exact copy) are left out (NaN)."""
    values = part.assign(value=numeric(part[metric])).pivot_table(
        index="image", columns=["protocol", "sigma", "model"], values="value")
    diff = sign * (values.xs(cunet, axis=1, level="model") - values.xs(unet, axis=1, level="model"))
    return diff.where(diff.abs() < float("inf"))


def _bootstrap(table: pd.DataFrame, claims: c_.ClaimsFile, statistic: Any = None) -> Interval:
    """The paired bootstrap interval over images (rows resampled together across every column) of
    ``statistic(rows)`` (default: the mean of every finite value)."""
    data = torch.tensor(table.to_numpy(dtype=float), dtype=torch.float64)
    return paired_bootstrap(statistic or (lambda x: torch.nanmean(x.flatten())), data,
                            resamples=c_.resamples(claims), level=c_.level(claims), seed=claims.get("seed", 0))


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
            setting = c_.setting_of(claim, architectures={"unet": u.get("preset"), "cunet": c.get("preset")},
                                    dataset=dataset)
            row = {**common, "setting": setting, "dataset": dataset, "pair": f"{cunet} / {unet}",
                   "device": part["device_name"].iloc[0]}
            if note is not None:
                rows.append({**row, "verdict": note})
                continue
            rows.append({**row, **_denoise_verdict(kind, claim, part, metric, cunet, unet, claims)})
    if not rows:
        rows.append({**common, "verdict": c_.not_measured("a U-Net and a cU-Net denoised on one dataset")})
    return rows


def denoising_claims(images: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """Verdicts on the claims with a ``denoise`` key, per dataset and (U-Net, cU-Net) pair, from the
    per-image values of both protocols: the cU-Net's advantage (its value minus the U-Net's, with
    the sign that makes better positive), its interval from the paired bootstrap over images
    (both models denoised the same noisy images), and :func:`missingu.report.claims.decide`:

    * ``better`` (metric): the mean advantage's interval above 0: reproduced; below 0: not
      reproduced; else inconclusive.
    * ``comparable`` (metric): not worse beyond ``tolerance`` of the U-Net's mean: the interval
      above ``-tolerance x |U-Net mean|``: reproduced; below it: not reproduced; else inconclusive.
    * ``stronger_at_high_noise`` (metric): the advantage at the largest sigma minus that at the
      smallest, per image: reproduced when its interval and the high-noise advantage's are both
      above 0; not reproduced when either is wholly below 0; else inconclusive.
    * ``draft`` claims: ``better`` at their ``sigma`` (sweep protocol).
    A metric that was not computed gives its note as the verdict."""
    return c_.judge_claims("denoise", images, claims)


def _denoise_verdict(kind: str, claim: c_.Claim, part: pd.DataFrame, metric: str, cunet: str, unet: str,
                     claims: c_.ClaimsFile) -> dict[str, Any]:
    sign = 1 if BETTER[metric][0] == "higher" else -1
    if kind == "draft":
        sigma = claim["sigma"]
        part = part[(part["protocol"] == "sweep") & (part["sigma"] == sigma)]
        if part.empty:
            return {"verdict": f"not measured: sigma {sigma} is not among denoise.sigmas (sweep protocol)"}
    adv = _advantages(part, metric, cunet, unet, sign)
    if adv.isna().all().all():
        return {"verdict": c_.not_measured("finite values")}
    if kind == "stronger_at_high_noise":
        sigmas = sorted(adv.columns.get_level_values("sigma").unique())
        low, high = sigmas[0], sigmas[-1]
        if low == high:
            return {"verdict": c_.not_measured("two noise levels")}
        at = {s: adv.xs(s, axis=1, level="sigma").mean(axis=1) for s in (low, high)}
        both = pd.DataFrame({"low": at[low], "high": at[high]})
        diff = _bootstrap(both, claims, lambda x: torch.nanmean(x[:, 1] - x[:, 0]))
        gain_high = _bootstrap(both, claims, lambda x: torch.nanmean(x[:, 1]))
        if diff.low > 0 and gain_high.low > 0:
            words = c_.REPRODUCED
        elif diff.high < 0 or gain_high.high < 0:
            words = c_.NOT_REPRODUCED
        else:
            words = c_.INCONCLUSIVE
        return {**c_.interval_fields(diff), "verdict": words,
                "detail": f"cU-Net advantage in {metric} at sigma {high:g} minus at sigma {low:g}: {diff.text()}; at "
                          f"sigma {high:g}: {gain_high.text()}"}
    interval = _bootstrap(adv, claims)
    said = f"cU-Net advantage in {metric} (better is positive): {interval.text()}"
    if kind == "comparable":
        reference = numeric(part[part["model"] == unet][metric]).replace([float("inf")], pd.NA).dropna().mean()
        margin = claims["tolerance"] * abs(float(reference))
        words = c_.decide(interval, -margin, "above")
        return {**c_.interval_fields(interval), "claimed": round(-margin, 4), "verdict": words,
                "detail": said + f"; comparable: not worse than {claims['tolerance']:.0%} of the U-Net's "
                                 f"{float(reference):.4g}" + c_.resolve_note(interval, -margin, words)}
    words = c_.decide(interval, 0.0, "above")
    return {**c_.interval_fields(interval), "claimed": 0.0, "verdict": words,
            "detail": said + c_.resolve_note(interval, 0.0, words)}
