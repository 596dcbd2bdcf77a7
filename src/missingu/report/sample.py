"""The sampling stage's report: the sampling table (network calls, wall time) from the ``.json``
summaries ``missingu sample`` writes, and the figure of sample grids."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .common import Record, save_figure


def sampling_table(samples: Sequence[Record]) -> pd.DataFrame:
    """One row per (dataset, model, sampler) from the ``.json`` summaries ``missingu sample`` writes."""
    rows = []
    for rec in samples:
        info = json.loads(Path(rec["summary"]).read_text())
        rows.append({
            "dataset": rec["dataset"], "model": rec["model"], "sampler": rec["sampler"],
            "kind": info["sampler"]["kind"], "num_samples": info["num_samples"],
            "network_calls": info["network_calls_per_batch"],
            "ode_evaluations": info["ode_evaluations_per_batch"],
            "seconds": round(info["seconds"], 3),
            "images_per_second": round(info["num_samples"] / info["seconds"], 3),
            "device": info["device"],
        })
    return pd.DataFrame(rows)


def plot_sample_grids(samples: Sequence[Record], path: str | Path, title: str = "") -> None:
    """A figure of sample grids: one row per model, one column per sampler (PNG records)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    models = list(dict.fromkeys(r["model"] for r in samples))
    samplers = list(dict.fromkeys(r["sampler"] for r in samples))
    fig, axes = plt.subplots(len(models), len(samplers), squeeze=False,
                             figsize=(2.6 * len(samplers), 2.8 * len(models)))
    for rec in samples:
        ax = axes[models.index(rec["model"])][samplers.index(rec["sampler"])]
        ax.imshow(Image.open(rec["grid"]).convert("RGB"))
    for i, model in enumerate(models):
        for j, sampler in enumerate(samplers):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(sampler)
            if j == 0:
                ax.set_ylabel(model)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)

