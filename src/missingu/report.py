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

Record = Mapping[str, Any]


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


def efficiency_table(profile: pd.DataFrame) -> pd.DataFrame:
    """The profile CSV in readable units: millions of parameters, GFLOPs and GMACs per call,
    milliseconds per call, seconds per sampled batch, MiB per training step."""
    out = pd.DataFrame({
        "shape": profile["shape"], "model": profile["model"], "variant": profile["variant"],
        "weights": profile["weights"], "params_M": profile["params_total"] / 1e6,
        "GFLOPs": profile["flops_per_call"] / 1e9, "GMACs": profile["macs_per_call"] / 1e9,
        "ode_evals": profile["ode_evals_per_call"],
    })
    for col in profile.columns:
        if col.startswith(("latency_ms_b", "sample_s_", "train_step_mib")):
            out[col] = profile[col]
    out["device"] = profile["device_name"]
    return out


# A claim's ``measure``: what it compares (words) and whether its ratio is noisy (time, memory).
MEASURES: dict[str, tuple[str, bool]] = {
    "parameters": ("parameters", False),
    "flops": ("FLOPs per call", False),
    "time": ("time", True),
    "train_memory": ("training-step memory", True),
}
_MEASURE_COLUMN = {"parameters": "params_total", "flops": "flops_per_call", "train_memory": "train_step_mib"}


def verdict(measured: float, claimed: float | None, tolerance: float, noise_band: Sequence[float],
            noisy: bool) -> str:
    """The verdict on a cU-Net / U-Net cost ratio (smaller is better) against a claimed one:
    ``inconclusive`` inside the noise band (noisy measures only), ``not reproduced`` at 1 or
    more, ``reproduced`` at most ``claimed * (1 + tolerance)`` (any ratio below 1 for a claim
    of direction only, ``claimed`` None), else ``partly``."""
    low, high = noise_band
    if noisy and low <= measured <= high:
        return "inconclusive"
    if measured >= 1:
        return "not reproduced"
    if claimed is None or measured <= claimed * (1 + tolerance):
        return "reproduced"
    return "partly"


def _columns(profile: pd.DataFrame, measure: str) -> list[tuple[str, str]]:
    """The profile columns a measure compares, with the metric's words."""
    if measure == "time":
        return [(col, f"time per call, batch {col.removeprefix('latency_ms_b')}") if col.startswith("latency_ms_b")
                else (col, f"time to sample a batch, {col.removeprefix('sample_s_')}")
                for col in profile.columns if col.startswith(("latency_ms_b", "sample_s_"))]
    column = _MEASURE_COLUMN[measure]
    return [(column, MEASURES[measure][0])] if column in profile.columns else []


def _detail(measure: str, ratio: float, claimed: float | None) -> str:
    if measure == "time":
        change = "faster" if ratio < 1 else "slower"
        said = f"{abs(1 - ratio):.0%} {change}"
        wanted = "" if claimed is None else f"; claimed up to {1 - claimed:.0%} faster"
        return said + wanted
    said = f"{ratio:.1%} of the U-Net's {MEASURES[measure][0]}"
    return said + ("" if claimed is None else f"; claimed {claimed:.0%}")


CLAIMS_COLUMNS = ["claim_id", "source", "claim", "shape", "pair", "metric", "claimed_ratio", "measured_ratio",
                  "verdict", "detail", "weights", "device"]


def claims_table(profile: pd.DataFrame, claims: Mapping[str, Any]) -> pd.DataFrame:
    """Every claim of ``config/paper_claims.yaml`` with a verdict in words.

    A claim with a ``measure`` gets one row per (U-Net, cU-Net) pair of base rows at the same
    input shape and per matching profile column: measured and claimed cU-Net / U-Net ratio,
    :func:`verdict`, the device and whether the weights were trained. Pairs other than the paper's
    architectures (U-Net ``paper`` with cU-Net ``paper`` or ``draft``) are marked indicative.
    A claim checked by a test, or not yet measurable, gets one row that says so."""
    tolerance, band = claims["tolerance"], claims["noise_band"]
    base = profile[profile["variant"] == "base"] if "variant" in profile else profile.iloc[:0]
    pairs = [(shape, u, c) for shape, group in base.groupby("shape", sort=False)  # (U-Net, cU-Net) per shape
             for _, u in group[group["arch"] == "unet"].iterrows()
             for _, c in group[group["arch"] == "cunet"].iterrows()]
    rows = []
    for claim in claims["claims"]:
        common = {"claim_id": claim["id"], "source": claim["source"], "claim": claim["claim"]}
        if "measure" not in claim:
            status = (f"checked by the tests: {claim['tested_by']}" if "tested_by" in claim
                      else f"not measured yet (needs: {claim['needs']})")
            rows.append({**common, "verdict": status})
            continue
        measure, claimed = claim["measure"], claim.get("claimed_ratio")
        found = False
        for shape, u, c in pairs:
            paper = u["preset"] == "paper" and c["preset"] in ("paper", "draft")
            for col, label in _columns(profile, measure):
                if pd.isna(u.get(col)) or pd.isna(c.get(col)):
                    continue
                found = True
                ratio = float(c[col]) / float(u[col])
                words = verdict(ratio, claimed, tolerance, band, MEASURES[measure][1])
                rows.append({
                    **common, "shape": shape, "metric": label, "claimed_ratio": claimed,
                    "pair": f"{c['model']} ({c['preset']}) / {u['model']} ({u['preset']})",
                    "measured_ratio": round(ratio, 4),
                    "verdict": words + ("" if paper else " (indicative: not the paper's architectures)"),
                    "detail": _detail(measure, ratio, claimed),
                    "weights": "trained" if {u["weights"], c["weights"]} == {"trained"} else "initial",
                    "device": u["device_name"],
                })
        if not found:
            rows.append({**common, "verdict": "not measured yet (needs: a U-Net and a cU-Net profiled at one shape)"})
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS)


def plot_claims(table: pd.DataFrame, path: str | Path) -> None:
    """Measured cU-Net / U-Net ratios (bars) against every claimed ratio on that metric (black ticks)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    table = table[table["measured_ratio"].notna()]
    if table.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no U-Net / cU-Net pair was profiled at a common input shape", ha="center", va="center")
        save_figure(fig, path)
        return
    panel_of = table["shape"] + "  " + table["pair"]
    panels = list(dict.fromkeys(panel_of))
    rows = table.drop_duplicates(["shape", "pair", "metric"])
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(8, 0.45 * len(rows) + 1.5 * len(panels)))
    for ax, panel in zip(axes[:, 0], panels):
        part = table[panel_of == panel]
        metrics = list(dict.fromkeys(part["metric"]))
        measured = part.drop_duplicates("metric").set_index("metric")["measured_ratio"]
        ax.barh(range(len(metrics)), [measured[m] for m in metrics], color="tab:blue", label="measured")
        claimed = part[part["claimed_ratio"].notna()]
        ax.scatter(claimed["claimed_ratio"], [metrics.index(m) for m in claimed["metric"]], color="black",
                   marker="|", s=300, label="claimed", zorder=3)
        ax.set_yticks(range(len(metrics)), metrics)
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("cU-Net / U-Net")
        ax.invert_yaxis()
    axes[0, 0].legend(loc="lower right")
    save_figure(fig, path)
