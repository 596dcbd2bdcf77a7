"""The quality stage's report: the sample-quality table (FID/KID, the classifier Frechet distance
and its real-vs-real value, classes covered), quality against cost, and the verdicts on the
quality claims (``quality:`` in the claims file)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..stats import Interval, fd_replicates, frechet_batch, percentile_interval
from . import claims as c_
from .common import Record, message_figure, metric_note, numeric, save_figure

QUALITY_METRICS = {  # column: (words, better)
    "fid": ("FID", "lower"),
    "kid_mean": ("KID", "lower"),
    "classifier_fd": ("classifier Frechet distance", "lower"),
}


def quality_table(records: Sequence[Record]) -> pd.DataFrame:
    """One row per (dataset, model, sampler) from the ``.json`` files ``missingu evaluate`` writes:
    the model's preset, the sampler's steps and network calls per sample, seconds per image (the
    same samples the metrics were computed on), FID/KID (or why not), the classifier Frechet
    distance, its bias-corrected value (FD extrapolated to infinitely many samples), the distance
    two samples of real images the classifier never saw read at the same number of images,
    classes covered, the device and the features file (when the record names one)."""
    rows = []
    for rec in records:
        info = json.loads(Path(rec["quality"]).read_text())
        rows.append({
            "dataset": info["dataset"], "model": info["model"], "arch": info["arch"],
            "preset": info.get("preset"), "sampler": info["sampler"],
            "kind": info["kind"], "steps": info["steps"], "network_calls": info["network_calls"],
            "num_samples": info["num_samples"], "seconds_per_image": info["seconds_per_image"],
            "fid": info["fid"], "kid_mean": info["kid_mean"], "kid_std": info["kid_std"],
            "classifier_fd": info["classifier_fd"], "classifier_fd_inf": info.get("classifier_fd_inf"),
            "classifier_fd_real": info["classifier_fd_real"],
            "classes_covered": f"{info['classes_covered']}/{info['num_classes']}",
            "classifier_accuracy": info["classifier_accuracy"], "device": info["device"],
            "features": rec.get("features"),
        })
    return pd.DataFrame(rows)


def plot_quality(table: pd.DataFrame, path: str | Path, x: str = "network_calls", title: str = "") -> None:
    """Each computed quality metric (panels) against ``x`` (network calls per sample, or seconds per
    image), one line per model, each point labelled with its sampler; log-scaled x."""
    import matplotlib.pyplot as plt

    if table.empty:
        message_figure("no samples were evaluated", path)
        return
    metrics = [m for m in QUALITY_METRICS if numeric(table[m]).notna().any()]
    missing = [f"{QUALITY_METRICS[m][0]}: {metric_note(table, m)}" for m in QUALITY_METRICS if m not in metrics]
    words = {"network_calls": "network calls per sample", "seconds_per_image": "seconds per image"}[x]
    fig, axes = plt.subplots(1, max(1, len(metrics)), squeeze=False, figsize=(4.2 * max(1, len(metrics)), 3.4))
    for ax, m in zip(axes[0], metrics):
        for model, rows in table.groupby("model", sort=False):
            rows = rows.assign(value=numeric(rows[m])).dropna(subset=["value"]).sort_values(x)
            ax.plot(rows[x], rows["value"], marker="o", label=model)
            for _, r in rows.iterrows():
                ax.annotate(r["sampler"], (r[x], r["value"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(words)
        ax.set_ylabel(f"{QUALITY_METRICS[m][0]} ({QUALITY_METRICS[m][1]} is better)")
    if metrics:
        axes[0][0].legend(fontsize=8)
    else:
        axes[0][0].axis("off")
    fig.suptitle(f"{title}: sample quality against {words}" if title else f"sample quality against {words}",
                 fontsize=10)
    if missing:
        fig.text(0.01, -0.04, "\n".join(missing), fontsize=8, va="top")
    save_figure(fig, path)


def fd_difference(reference: Tensor, cunet: Tensor, unet: Tensor, claims: c_.ClaimsFile) -> Interval:
    """The paired bootstrap interval of ``FD(cU-Net) - FD(U-Net)`` against one reference: sample
    ``k`` of both models drew seed ``k``, so both arms are resampled on the same rows (the first
    ``N`` of each, ``N`` the smaller count), the reference on rows of its own."""
    n = min(len(cunet), len(unet))
    cunet, unet = cunet[:n].double(), unet[:n].double()
    reference = reference.double()
    estimate = float(frechet_batch(cunet[None], reference[None])[0] - frechet_batch(unet[None], reference[None])[0])
    reps = fd_replicates(reference, [cunet, unet], resamples=c_.resamples(claims), seed=claims.get("seed", 0))
    return percentile_interval(estimate, reps[0] - reps[1], c_.level(claims), n)


def comparable_verdict(reference: Tensor, cunet: Tensor, unet: Tensor, claims: c_.ClaimsFile
                       ) -> tuple[str, Interval, float]:
    """(verdict, interval, margin) of "the cU-Net's quality is comparable to the U-Net's" from
    features: the paired interval of ``FD(cU-Net) - FD(U-Net)`` (:func:`fd_difference`) at most
    ``tolerance x FD(U-Net)`` (the margin; not worse beyond it) by :func:`missingu.report.claims.decide`."""
    interval = fd_difference(reference, cunet, unet, claims)
    n = min(len(cunet), len(unet))
    margin = claims["tolerance"] * float(frechet_batch(unet[:n].double()[None], reference.double()[None])[0])
    return c_.decide(interval, margin, "below"), interval, margin


def _features(path: Any) -> dict[str, Tensor] | None:
    if path is None or (isinstance(path, float) and pd.isna(path)) or not Path(str(path)).is_file():
        return None
    return torch.load(str(path), weights_only=True)


@c_.claim_check("quality", stage="quality", table="quality_vs_claims", words="the sample-quality evaluation")
def _judge_quality(claim: c_.Claim, table: pd.DataFrame, claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per dataset, sampler and (U-Net, cU-Net) pair (see :func:`quality_claims`)."""
    tolerance = claims["tolerance"]
    rows = []
    chosen = table if "kind" not in claim else table[table["kind"] == claim["kind"]]
    for (dataset, sampler), u, c in c_.unet_cunet_pairs(chosen, ["dataset", "sampler"]):
        fu, fc = _features(u.get("features")), _features(c.get("features"))
        cached = fu is not None and fc is not None and "fid_samples" in fu and "fid_samples" in fc
        fid = pd.notna(numeric(pd.Series([u["fid"], c["fid"]])).min()) and cached
        metric = "fid" if fid else "classifier_fd"
        mu, mc = float(u[metric]), float(c[metric])
        setting = c_.setting_of(claim, architectures={"unet": u.get("preset"), "cunet": c.get("preset")},
                                dataset=dataset, sampler=u["kind"], samples=u["num_samples"],
                                metric="fid" if fid else "classifier distance")
        common = {**c_.claim_fields(claim), "setting": setting, "dataset": dataset,
                  "pair": f"{c['model']} / {u['model']}", "device": u["device"],
                  "metric": f"{QUALITY_METRICS[metric][0]}, cU-Net minus U-Net ({sampler})"}
        said = f"cU-Net {mc:.4g} vs U-Net {mu:.4g}"
        if fu is None or fc is None:
            rows.append({**common, "measured": round(mc - mu, 4), "verdict": c_.INCONCLUSIVE,
                         "detail": said + "; no features cached beside the evaluation: no interval"})
            continue
        key = "fid_" if fid else ""
        words, interval, margin = comparable_verdict(fu[f"{key}reference"], fc[f"{key}samples"],
                                                     fu[f"{key}samples"], claims)
        detail = (f"{said}, difference {interval.text()}; comparable: at most {margin:.4g} worse ({tolerance:.0%} of "
                  f"the U-Net's)")
        if not fid:
            detail += (f"; two samples of unseen real images read {float(u['classifier_fd_real']):.4g} at this "
                       f"number of images")
            if pd.notna(u.get("classifier_fd_inf")) and pd.notna(c.get("classifier_fd_inf")):
                detail += (f"; extrapolated to infinitely many samples: cU-Net {float(c['classifier_fd_inf']):.4g}, "
                           f"U-Net {float(u['classifier_fd_inf']):.4g}")
        rows.append({**common, **c_.interval_fields(interval), "claimed": round(margin, 4), "verdict": words,
                     "detail": detail + c_.resolve_note(interval, margin, words)})
    if not rows:
        sampled = "sampled" if "kind" not in claim else f"sampled with a {claim['kind']} sampler"
        needs = f"a U-Net and a cU-Net {sampled} on one dataset"
        rows.append({**c_.claim_fields(claim), "verdict": c_.not_measured(needs)})
    return rows


def quality_claims(table: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """Verdicts on the claims with a ``quality`` key (cU-Net sample quality comparable to the
    U-Net's), per dataset, sampler and (U-Net, cU-Net) pair, from the features cached beside each
    evaluation: FID where it was computed, else the classifier Frechet distance. The effect is
    ``FD(cU-Net) - FD(U-Net)`` with its paired bootstrap interval (:func:`fd_difference`); it is
    *reproduced* when the whole interval is at most ``tolerance x FD(U-Net)`` (comparable: not
    worse beyond that margin), *not reproduced* when the whole interval is above it, else
    *inconclusive* (:func:`missingu.report.claims.decide`). The real-vs-real value is shown, not
    used as a noise band: it is the estimate for two samples of real images at that size."""
    if table.empty:
        table = pd.DataFrame(columns=["dataset", "sampler", "arch", "kind"])
    return c_.judge_claims("quality", table, claims)
