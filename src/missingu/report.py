"""Tables and figures from pipeline outputs, for the analysis notebooks.

Every function reads files the pipeline wrote and returns or writes plain tables and PNGs;
nothing here trains or samples. Needs the ``pipeline`` extra (pandas, matplotlib, seaborn).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_open, atomic_write
from .models import model_from_meta
from .profiling import count_parameters
from .train import load_snapshot

Record = Mapping[str, Any]


def read_loss_curves(runs: Sequence[Record]) -> pd.DataFrame:
    """Concatenate ``loss.csv`` files; each run record has ``dataset``, ``model``, ``loss_csv``."""
    frames = []
    for run in runs:
        df = pd.read_csv(run["loss_csv"])
        frames.append(df.assign(dataset=run["dataset"], model=run["model"]))
    return pd.concat(frames, ignore_index=True)


def training_table(runs: Sequence[Record], curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run: parameters (counted on the rebuilt model), steps, final loss
    (mean of the last 10% of logged rows) and training wall time."""
    rows = []
    for run in runs:
        snap = load_snapshot(run["snapshot"])
        model = model_from_meta(snap["meta"], snap["state_dict"])
        c = curves[(curves.dataset == run["dataset"]) & (curves.model == run["model"])]
        tail = c.tail(max(1, len(c) // 10))
        rows.append({
            "dataset": run["dataset"], "model": run["model"], "arch": snap["meta"]["arch"],
            "parameters": count_parameters(model), "steps": int(snap["step"]),
            "final_loss": float(tail["loss"].mean()), "train_seconds": float(c["seconds"].max()),
        })
    return pd.DataFrame(rows)


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


def write_table(df: pd.DataFrame, stem: str | Path, floatfmt: str = ".4g") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md`` (a Markdown table) atomically."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_open(csv_path) as fh:
        df.to_csv(fh, index=False)
    with atomic_open(md_path) as fh:
        fh.write(markdown(df, floatfmt) + "\n")
    return csv_path, md_path


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A Markdown table: integer columns stay integers, missing values are left blank."""
    shown = df.copy()
    align = []
    for col in shown.columns:
        values = shown[col]
        numeric = values.dtype.kind in "iuf"
        if values.dtype.kind == "f" and values.dropna().apply(float.is_integer).all():
            values = values.astype("Int64")
        if numeric and values.dtype.kind != "f":
            shown[col] = values.map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
        elif numeric:
            shown[col] = values.map(lambda v: "" if pd.isna(v) else format(v, floatfmt))
        align.append("right" if numeric else "left")
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_loss_curves(curves: pd.DataFrame, path: str | Path) -> None:
    """Training loss against step, all models of a dataset on one axis (one panel per dataset)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    grid = sns.relplot(data=curves, x="step", y="loss", hue="model", col="dataset", kind="line",
                       height=3.2, aspect=1.4, facet_kws={"sharey": False})
    grid.set(yscale="log")
    grid.set_axis_labels("training step", "loss (mean squared error, log scale)")
    save_figure(grid.figure, path)


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
