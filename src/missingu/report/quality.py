"""The quality stage's report: the sample-quality table (FID/KID, the classifier Frechet distance
and its real-vs-real value, classes covered), quality against cost, and the verdicts on the
quality claims (``quality:`` in the claims file)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import claims as c_
from .common import Record, message_figure, metric_note, numeric, save_figure

QUALITY_METRICS = {  # column: (words, better)
    "fid": ("FID", "lower"),
    "kid_mean": ("KID", "lower"),
    "classifier_fd": ("classifier Frechet distance", "lower"),
}


def quality_table(records: Sequence[Record]) -> pd.DataFrame:
    """One row per (dataset, model, sampler) from the ``.json`` files ``missingu evaluate`` writes:
    the sampler's steps and network calls per sample, seconds per image (the same samples the
    metrics were computed on), FID/KID (or why not), the classifier Frechet distance with the
    real-vs-real distance at the same number of images beside it, classes covered and the device."""
    rows = []
    for rec in records:
        info = json.loads(Path(rec["quality"]).read_text())
        rows.append({
            "dataset": info["dataset"], "model": info["model"], "arch": info["arch"], "sampler": info["sampler"],
            "kind": info["kind"], "steps": info["steps"], "network_calls": info["network_calls"],
            "num_samples": info["num_samples"], "seconds_per_image": info["seconds_per_image"],
            "fid": info["fid"], "kid_mean": info["kid_mean"], "kid_std": info["kid_std"],
            "classifier_fd": info["classifier_fd"], "classifier_fd_real": info["classifier_fd_real"],
            "classes_covered": f"{info['classes_covered']}/{info['num_classes']}",
            "classifier_accuracy": info["classifier_accuracy"], "device": info["device"],
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


@c_.claim_check("quality", stage="quality", table="quality_vs_claims", words="the sample-quality evaluation")
def _judge_quality(claim: c_.Claim, table: pd.DataFrame, claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per dataset, sampler and (U-Net, cU-Net) pair (see :func:`quality_claims`)."""
    tolerance = claims["tolerance"]
    rows = []
    chosen = table if "kind" not in claim else table[table["kind"] == claim["kind"]]
    for (dataset, sampler), u, c in c_.unet_cunet_pairs(chosen, ["dataset", "sampler"]):
        metric = "fid" if pd.notna(numeric(pd.Series([u["fid"], c["fid"]])).min()) else "classifier_fd"
        mu, mc = float(u[metric]), float(c[metric])
        floor = float(u["classifier_fd_real"]) if metric == "classifier_fd" else 0.0
        if mc <= mu * (1 + tolerance):
            words = c_.REPRODUCED
        elif abs(mc - mu) < floor:
            words = c_.INCONCLUSIVE
        else:
            words = c_.NOT_REPRODUCED
        rows.append({**c_.claim_fields(claim), "dataset": dataset, "pair": f"{c['model']} / {u['model']}",
                     "metric": f"{QUALITY_METRICS[metric][0]} ({sampler})",
                     "measured": round(mc / mu, 4) if mu else None, "verdict": words,
                     "detail": f"cU-Net {mc:.4g} vs U-Net {mu:.4g}"
                               + (f"; real vs real {floor:.4g} at {int(u['num_samples'])} images"
                                  if metric == "classifier_fd" else ""),
                     "device": u["device"]})
    if not rows:
        sampled = "sampled" if "kind" not in claim else f"sampled with a {claim['kind']} sampler"
        needs = f"a U-Net and a cU-Net {sampled} on one dataset"
        rows.append({**c_.claim_fields(claim), "verdict": c_.not_measured(needs)})
    return rows


def quality_claims(table: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """Verdicts on the claims with a ``quality`` key (cU-Net sample quality comparable to the
    U-Net's), per dataset, sampler and (U-Net, cU-Net) pair: FID where it was computed, else the
    classifier Frechet distance. *reproduced*: the cU-Net's value is at most the U-Net's times
    (1 + tolerance); *inconclusive*: the two differ by less than the real-vs-real classifier
    distance at the same number of images (the estimate's own floor; classifier distance only);
    else *not reproduced*."""
    if table.empty:
        table = pd.DataFrame(columns=["dataset", "sampler", "arch", "kind"])
    return c_.judge_claims("quality", table, claims)
