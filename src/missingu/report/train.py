"""The training stage's report: loss curves and the training table, from ``loss.csv`` and the
``config.json`` record ``missingu train`` writes beside each model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .common import Record, save_figure


def read_loss_curves(runs: Sequence[Record]) -> pd.DataFrame:
    """Concatenate ``loss.csv`` files; each run record has ``dataset``, ``model``, ``loss_csv``
    (and ``record``: the run's ``config.json``, for :func:`training_table`)."""
    frames = []
    for run in runs:
        df = pd.read_csv(run["loss_csv"])
        frames.append(df.assign(dataset=run["dataset"], model=run["model"]))
    return pd.concat(frames, ignore_index=True)


def training_table(runs: Sequence[Record], curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run: parameters (counted by ``missingu train``, from its ``config.json``),
    steps, final loss (mean of the last 10% of logged rows) and training wall time."""
    rows = []
    for run in runs:
        record = json.loads(Path(run["record"]).read_text())
        c = curves[(curves.dataset == run["dataset"]) & (curves.model == run["model"])]
        tail = c.tail(max(1, len(c) // 10))
        rows.append({
            "dataset": run["dataset"], "model": run["model"], "arch": record["meta"]["arch"],
            "parameters": int(record["parameters"]), "steps": int(c["step"].max()),
            "final_loss": float(tail["loss"].mean()), "train_seconds": float(c["seconds"].max()),
        })
    return pd.DataFrame(rows)


def plot_loss_curves(curves: pd.DataFrame, path: str | Path) -> None:
    """Training loss against step, all models of a dataset on one axis (one panel per dataset)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    grid = sns.relplot(data=curves, x="step", y="loss", hue="model", col="dataset", kind="line",
                       height=3.2, aspect=1.4, facet_kws={"sharey": False})
    grid.set(yscale="log")
    grid.set_axis_labels("training step", "loss (mean squared error, log scale)")
    save_figure(grid.figure, path)

