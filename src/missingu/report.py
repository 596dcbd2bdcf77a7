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
        else:
            shown[col] = values.map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
        align.append("right" if numeric else "left")
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def message_figure(text: str, path: str | Path) -> None:
    """A small PNG that says, in words, why there is nothing to plot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    save_figure(fig, path)


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
            if "tested_by" in claim:
                status = f"checked by the tests: {claim['tested_by']}"
            elif "denoise" in claim:
                status = "measured by the denoising task: results/tables/denoising_vs_claims.md"
            elif "quality" in claim:
                status = "measured by the sample-quality evaluation: results/tables/quality_vs_claims.md"
            elif "stepaware" in claim:
                status = "measured by the step-aware study: results/tables/stepaware_vs_claims.md"
            else:
                status = f"not measured yet (needs: {claim['needs']})"
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


_BENCH_TIME = {"train": ("ms_per_step", 1.0), "call": ("ms_per_call", 1.0), "sample": ("s_per_image", 1000.0)}


def bench_table(bench: pd.DataFrame) -> pd.DataFrame:
    """``missingu bench`` rows in readable units, one per (part, batch, variant, model): milliseconds
    (per training step, per call, per sampled image), images/s, model FLOPs utilisation, peak MiB,
    and each time against the U-Net's of the same part, batch, variant and ``source`` (the CSV a
    row came from, when several are read: ratios are only taken within one run). Rows that were
    not run or failed keep their status."""
    rows = []
    if "source" not in bench:
        bench = bench.assign(source="")
    measured = bench[bench["part"].isin(list(_BENCH_TIME))]

    def key(r: pd.Series) -> tuple:
        return r["source"], r["part"], r["batch"], r["variant"]

    unet = {key(r): r for _, r in measured[measured["arch"] == "unet"].iterrows()}
    for _, r in measured.iterrows():
        column, scale = _BENCH_TIME[r["part"]]
        ms = float(r[column]) * scale if column in r and pd.notna(r.get(column)) else None
        base = unet.get(key(r))
        base_ms = None
        if base is not None and pd.notna(base.get(column)):
            base_ms = float(base[column]) * scale
        rows.append({
            "part": r["part"], "batch": r["batch"], "variant": r["variant"], "model": r["model"],
            "ms": ms, "images_per_s": r.get("images_per_s"), "vs_unet": ms / base_ms if ms and base_ms else None,
            "mfu": r.get("mfu"), "peak_mib": r.get("train_peak_mib"), "kernel_ops": r.get("kernel_ops_per_call"),
            "status": r["status"], "device": r["device_name"], "source": r["source"],
        })
    notes = bench[~bench["part"].isin(list(_BENCH_TIME))]
    for _, r in notes.iterrows():
        rows.append({"part": r["part"], "variant": r["variant"], "model": r["model"], "status": r["status"],
                     "device": r["device_name"]})
    return pd.DataFrame(rows)


def speed_claims(bench: pd.DataFrame, claims: Mapping[str, Any]) -> pd.DataFrame:
    """The inference-time claims (``measure: time``) against ``missingu bench``'s whole-sampler time
    per image, cU-Net over U-Net, at each sampling batch size: once with both models eager
    (float32) and once with each at its fastest measured variant (fast paths on)."""
    sample = bench[(bench["part"] == "sample") & (bench["status"] == "ok")]
    rows = []
    for claim in claims["claims"]:
        if claim.get("measure") != "time":
            continue
        claimed = claim.get("claimed_ratio")
        for batch, group in sample.groupby("batch", sort=True):
            u, c = group[group["arch"] == "unet"], group[group["arch"] == "cunet"]
            for _, cg in c.groupby("model", sort=False):
                for how in ("eager", "fastest"):
                    if how == "eager":
                        uu, cc = u[u["variant"] == "eager"], cg[cg["variant"] == "eager"]
                    else:
                        uu, cc = u.nsmallest(1, "s_per_image"), cg.nsmallest(1, "s_per_image")
                    if uu.empty or cc.empty:
                        continue
                    ur, cr = uu.iloc[0], cc.iloc[0]
                    ratio = float(cr["s_per_image"]) / float(ur["s_per_image"])
                    setting = "both eager, float32" if how == "eager" else (
                        f"each at its fastest: {cr['model']} {cr['variant']}, {ur['model']} {ur['variant']}")
                    rows.append({
                        "claim_id": claim["id"], "source": claim["source"], "claim": claim["claim"],
                        "shape": cr["shape"],
                        "pair": f"{cr['model']} ({cr['preset']}) / {ur['model']} ({ur['preset']})",
                        "metric": f"{cr['sampler']} time per image, batch {int(batch)} ({setting})",
                        "claimed_ratio": claimed, "measured_ratio": round(ratio, 4),
                        "verdict": verdict(ratio, claimed, claims["tolerance"], claims["noise_band"], True),
                        "detail": _detail("time", ratio, claimed), "weights": "initial",
                        "device": cr["device_name"],
                    })
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS)


def plot_claims(table: pd.DataFrame, path: str | Path) -> None:
    """Measured cU-Net / U-Net ratios (bars) against every claimed ratio on that metric (black ticks)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    table = table[table["measured_ratio"].notna()]
    if table.empty:
        message_figure("no U-Net / cU-Net pair was profiled at a common input shape", path)
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


# --- the denoising task ---------------------------------------------------------------------------

DENOISE_METRICS = ("psnr", "ssim", "lpips")
# Which way is better for each metric, and its words.
BETTER = {"psnr": ("higher", "PSNR (dB)"), "ssim": ("higher", "SSIM"), "lpips": ("lower", "LPIPS")}


def read_denoising(runs: Sequence[Record], part: str = "summary") -> pd.DataFrame:
    """Concatenate what ``missingu denoise`` wrote for every run record (``summary``: the CSV a
    record names; ``curves`` / ``images``: the ``.curves.csv`` / ``.images.csv`` beside it). A
    metric that was not computed keeps its note as text."""
    frames = []
    for run in runs:
        path = Path(run["summary"])
        if part != "summary":
            path = path.with_suffix(f".{part}.csv")
        frames.append(pd.read_csv(path, keep_default_na=False, na_values=[""]))
    return pd.concat(frames, ignore_index=True)


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def metric_note(df: pd.DataFrame, metric: str) -> str | None:
    """The note a metric carries where it was not computed (``not computed: ...``), else None."""
    column = metric if metric in df else f"{metric}_mean"
    text = df[column][_numeric(df[column]).isna()].dropna().astype(str)
    return text.iloc[0] if len(text) else None


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
    metrics = [m for m in DENOISE_METRICS if _numeric(part[f"{m}_mean"]).notna().any()]
    missing = [f"{m}: {metric_note(part, m)}" for m in DENOISE_METRICS if m not in metrics]
    fig, axes = plt.subplots(len(metrics), len(sigmas), squeeze=False, sharex="col",
                             figsize=(2.8 * len(sigmas), 2.4 * len(metrics) + 0.6))
    for j, sigma in enumerate(sigmas):
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            for model, rows in part[part["sigma"] == sigma].groupby("model", sort=False):
                mean, std = _numeric(rows[f"{m}_mean"]), _numeric(rows[f"{m}_std"]).fillna(0)
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
    start), from the ``.examples.pt`` beside each run's summary."""
    import matplotlib.pyplot as plt
    import torch
    from torchvision.utils import make_grid

    blobs = [(run["model"], torch.load(Path(run["summary"]).with_suffix(".examples.pt"), weights_only=True))
             for run in runs]
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
    values = part.assign(value=_numeric(part[metric])).pivot_table(
        index=["protocol", "sigma", "image"], columns="model", values="value")
    diff = (values[cunet] - values[unet]).dropna()
    diff = diff[diff.abs() < float("inf")]
    if diff.empty:
        return None, None, 0
    se = float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else float("inf")
    return float(diff.mean()), se, len(diff)


def denoising_claims(images: pd.DataFrame, claims: Mapping[str, Any]) -> pd.DataFrame:
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
    tolerance = claims["tolerance"]
    rows = []
    for claim in claims["claims"]:
        if "denoise" not in claim:
            continue
        kind, metric = claim["denoise"], claim.get("metric", "psnr")
        common = {"claim_id": claim["id"], "source": claim["source"], "claim": claim["claim"], "metric": metric}
        found = False
        for dataset, part in images.groupby("dataset", sort=False):
            arch = part.drop_duplicates("model").set_index("model")["arch"]
            note = metric_note(part, metric)
            for unet in arch[arch == "unet"].index:
                for cunet in arch[arch == "cunet"].index:
                    found = True
                    row = {**common, "dataset": dataset, "pair": f"{cunet} / {unet}",
                           "device": part["device_name"].iloc[0]}
                    if note is not None:
                        rows.append({**row, "verdict": note})
                        continue
                    rows.append({**row, **_denoise_verdict(kind, claim, part, metric, cunet, unet, tolerance)})
        if not found:
            rows.append({**common, "verdict": "not measured yet (needs: a U-Net and a cU-Net denoised on one dataset)"})
    columns = ["claim_id", "source", "claim", "dataset", "pair", "metric", "measured", "verdict", "detail", "device"]
    return pd.DataFrame(rows, columns=columns)


def _denoise_verdict(kind: str, claim: Mapping[str, Any], part: pd.DataFrame, metric: str, cunet: str, unet: str,
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
            return {"verdict": "not measured yet (needs: finite values at two noise levels)"}
        gain_low, gain_high = sign * at_low, sign * at_high
        ok = gain_high > gain_low and gain_high > 0
        return {"measured": round(gain_high - gain_low, 4), "verdict": "reproduced" if ok else "not reproduced",
                "detail": f"cU-Net advantage in {metric}: {gain_low:+.4g} at sigma {low:g}, {gain_high:+.4g} at "
                          f"sigma {high:g}"}
    mean, se, n = _paired(part, metric, cunet, unet)
    if mean is None:
        return {"verdict": "not measured yet (needs: finite values)"}
    gain = sign * mean
    detail = f"cU-Net {'+' if mean >= 0 else ''}{mean:.4g} {metric} vs the U-Net (standard error {se:.2g}, {n} pairs)"
    if kind == "comparable":
        reference = _numeric(part[part["model"] == unet][metric]).replace([float("inf")], pd.NA).dropna().mean()
        ok = gain >= -tolerance * abs(float(reference))
        return {"measured": round(mean, 4), "verdict": "reproduced" if ok else "not reproduced",
                "detail": detail + f"; comparable: within {tolerance:.0%} of the U-Net's {float(reference):.4g}"}
    if gain > 2 * se:
        words = "reproduced"
    elif gain < -2 * se:
        words = "not reproduced"
    else:
        words = "inconclusive"
    if kind == "draft":
        words += " (indicative: the draft measured one CelebA image)"
    return {"measured": round(mean, 4), "verdict": words, "detail": detail}


# --- sample quality ----------------------------------------------------------------------------------

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
    metrics = [m for m in QUALITY_METRICS if _numeric(table[m]).notna().any()]
    missing = [f"{QUALITY_METRICS[m][0]}: {metric_note(table, m)}" for m in QUALITY_METRICS if m not in metrics]
    words = {"network_calls": "network calls per sample", "seconds_per_image": "seconds per image"}[x]
    fig, axes = plt.subplots(1, max(1, len(metrics)), squeeze=False, figsize=(4.2 * max(1, len(metrics)), 3.4))
    for ax, m in zip(axes[0], metrics):
        for model, rows in table.groupby("model", sort=False):
            rows = rows.assign(value=_numeric(rows[m])).dropna(subset=["value"]).sort_values(x)
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


def quality_claims(table: pd.DataFrame, claims: Mapping[str, Any]) -> pd.DataFrame:
    """Verdicts on the claims with a ``quality`` key (cU-Net sample quality comparable to the
    U-Net's), per dataset, sampler and (U-Net, cU-Net) pair: FID where it was computed, else the
    classifier Frechet distance. *reproduced*: the cU-Net's value is at most the U-Net's times
    (1 + tolerance); *inconclusive*: the two differ by less than the real-vs-real classifier
    distance at the same number of images (the estimate's own floor; classifier distance only);
    else *not reproduced*."""
    tolerance = claims["tolerance"]
    rows = []
    for claim in claims["claims"]:
        if "quality" not in claim:
            continue
        common = {"claim_id": claim["id"], "source": claim["source"], "claim": claim["claim"]}
        found = False
        chosen = table if "kind" not in claim else table[table["kind"] == claim["kind"]]
        for (dataset, sampler), part in chosen.groupby(["dataset", "sampler"], sort=False):
            for _, u in part[part["arch"] == "unet"].iterrows():
                for _, c in part[part["arch"] == "cunet"].iterrows():
                    found = True
                    metric = "fid" if pd.notna(_numeric(pd.Series([u["fid"], c["fid"]])).min()) else "classifier_fd"
                    mu, mc = float(u[metric]), float(c[metric])
                    floor = float(u["classifier_fd_real"]) if metric == "classifier_fd" else 0.0
                    if mc <= mu * (1 + tolerance):
                        words = "reproduced"
                    elif abs(mc - mu) < floor:
                        words = "inconclusive"
                    else:
                        words = "not reproduced"
                    rows.append({**common, "dataset": dataset, "pair": f"{c['model']} / {u['model']}",
                                 "metric": f"{QUALITY_METRICS[metric][0]} ({sampler})",
                                 "measured": round(mc / mu, 4) if mu else None, "verdict": words,
                                 "detail": f"cU-Net {mc:.4g} vs U-Net {mu:.4g}"
                                           + (f"; real vs real {floor:.4g} at {int(u['num_samples'])} images"
                                              if metric == "classifier_fd" else ""),
                                 "device": u["device"]})
        if not found:
            sampled = "sampled" if "kind" not in claim else f"sampled with a {claim['kind']} sampler"
            needs = f"a U-Net and a cU-Net {sampled} on one dataset"
            rows.append({**common, "verdict": f"not measured yet (needs: {needs})"})
    columns = ["claim_id", "source", "claim", "dataset", "pair", "metric", "measured", "verdict", "detail", "device"]
    return pd.DataFrame(rows, columns=columns)


def merge_claims(efficiency: pd.DataFrame, *others: pd.DataFrame) -> pd.DataFrame:
    """One claims table: the efficiency table's rows, where a claim measured by another task (the
    denoising task, sample quality) has its rows from that task's table instead, in the order of
    the claims file."""
    replaced = pd.concat(others, ignore_index=True) if others else efficiency.iloc[:0]
    ids = list(dict.fromkeys(efficiency["claim_id"]))
    parts = []
    for claim_id in ids:
        own = replaced[replaced["claim_id"] == claim_id]
        parts.append(own if len(own) else efficiency[efficiency["claim_id"] == claim_id])
    return pd.concat(parts, ignore_index=True)


def stepaware_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The step-aware study's strategies (not the search's other candidates), per dataset: quality
    and its real-vs-real floor, mean and total GFLOPs, the saving against the full width, seconds
    per image, and each network's share of the visited steps."""
    kept = rows[rows["kind"] != "candidate"].copy()
    shares = [c for c in kept.columns if c.startswith("share_")]
    columns = ["dataset", "strategy", "kind", "quality", "quality_floor", "mean_gflops", "total_gflops", "saving",
               "seconds_per_image", "network_calls", *shares]
    return kept[[c for c in columns if c in kept.columns]].reset_index(drop=True)


def plot_strategy_heatmap(strategies: Mapping[str, Mapping[str, Any]], gflops: Mapping[str, float], path: str | Path,
                          title: str = "") -> None:
    """Each strategy's network over the diffusion steps (colour: that network's GFLOPs per call)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .stepaware import label, parse_choice

    names = list(strategies)
    grid = np.array([[gflops[label(parse_choice(c))] for c in strategies[n]["steps"]] for n in names])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.4))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("diffusion step t (0: least noisy)")
    ax.set_title(title or "network per step")
    fig.colorbar(image, ax=ax, label="GFLOPs per call")
    save_figure(fig, path)


def plot_stepaware_pareto(rows: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """Quality against mean GFLOPs per call: the search's candidates (grey), the baselines, the
    random strategies and the searched ones marked; the real-vs-real floor dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"candidate": dict(c="0.75", marker=".", s=25), "baseline": dict(c="tab:blue", marker="s", s=45),
              "random": dict(c="tab:orange", marker="x", s=45), "search": dict(c="tab:red", marker="*", s=140)}
    for kind, style in styles.items():
        part = rows[rows["kind"] == kind]
        if len(part):
            ax.scatter(part["mean_gflops"], part["quality"], label=kind, **style)
    for _, r in rows[rows["kind"].isin(["baseline", "search"])].iterrows():
        ax.annotate(r["strategy"], (r["mean_gflops"], r["quality"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    floor = pd.to_numeric(rows.get("quality_floor"), errors="coerce").dropna()
    if len(floor):
        ax.axhline(float(floor.iloc[0]), ls="--", c="0.4", lw=1, label="real vs real")
    ax.set_xlabel("mean GFLOPs per network call")
    ax.set_ylabel("quality (lower is better)")
    ax.set_title(title or "step-aware strategies")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _stepaware_verdict(claim: Mapping[str, Any], rows: pd.DataFrame, record: Mapping[str, Any]
                       ) -> tuple[str, str, Any]:
    """(verdict, detail, measured) of one DDSM claim on one dataset's study."""
    def one(name: str) -> pd.Series | None:
        part = rows[rows["strategy"] == name]
        return part.iloc[0] if len(part) else None

    full, searched = one("uniform w1"), next((r for _, r in rows[rows["kind"] == "search"].iterrows()), None)
    if full is None or searched is None:
        return "not measured yet (needs: the full width and a searched strategy)", "", None
    floor = float(full.get("quality_floor", 0) or 0)
    worse = float(searched["quality"]) - float(full["quality"])
    kind = claim["stepaware"]
    if kind in ("saving", "ddim"):
        if kind == "ddim" and record.get("sampler", {}).get("kind") != "ddim":
            return "not measured yet (needs: a DDIM sampler in stepaware.sampler)", "", None
        saving = float(searched["saving"])
        detail = (f"searched: {saving:.0%} of the FLOPs saved, quality {float(searched['quality']):.4g} against the "
                  f"full width's {float(full['quality']):.4g} (real-vs-real floor {floor:.4g})")
        if saving <= 0:
            return "not reproduced", detail, saving
        return ("reproduced" if worse <= floor else "partly"), detail, saving
    if kind == "random":
        randoms = rows[rows["kind"] == "random"]
        if randoms.empty:
            return "not measured yet (needs: random baselines)", "", None
        best_random = float(randoms["quality"].min())
        detail = (f"searched {float(searched['quality']):.4g} against random strategies at the same FLOPs: "
                  f"best {best_random:.4g}, mean {float(randoms['quality'].mean()):.4g}")
        return ("reproduced" if float(searched["quality"]) < best_random else "not reproduced"), detail, \
            float(searched["quality"]) - best_random
    if kind == "mix":
        mixed = [r for _, r in rows[rows["kind"] != "candidate"].iterrows()
                 if any(c.startswith("share_") and not c.startswith("share_w") and 0 < float(r[c]) < 1
                        for c in rows.columns)]
        if not mixed:
            return "not measured yet (needs: a model in stepaware.mix used at some steps)", "", None
        best = min(mixed, key=lambda r: float(r["quality"]))
        return "reproduced", (f"{best['strategy']} mixes networks per step: quality {float(best['quality']):.4g}, "
                              f"{float(best['saving']):.0%} of the full width's FLOPs saved"), float(best["saving"])
    return f"unknown stepaware check {kind!r}", "", None


def stepaware_claims(rows: pd.DataFrame, records: Mapping[str, Mapping[str, Any]], claims: Mapping[str, Any]
                     ) -> pd.DataFrame:
    """The DDSM claims (``stepaware:`` in the claims file) against each dataset's study. ``widths``
    compares the measured GFLOPs ratio of each width to the full one with the claimed ratios;
    ``saving``/``ddim``: the searched strategy saves FLOPs with quality within the real-vs-real
    floor of the full width's; ``random``: it beats the random strategies at its FLOPs; ``mix``: a
    strategy mixes another model in. Our datasets, networks and quality measure differ from the
    paper's: such rows are indicative."""
    out = []
    tolerance = claims["tolerance"]
    for claim in claims["claims"]:
        if "stepaware" not in claim:
            continue
        common = {"claim_id": claim["id"], "source": claim["source"], "claim": claim["claim"]}
        if rows.empty:
            out.append({**common, "verdict": "not measured yet (needs: stepaware.model, a slimmable model)"})
            continue
        for dataset, part in rows.groupby("dataset", sort=False):
            record = records.get(dataset, {})
            if claim["stepaware"] == "widths":
                from .config import to_dict
                from .models.ddpm import DDPMUNetConfig

                ddsm = record.get("model", {}).get("model") == to_dict(DDPMUNetConfig())
                note = "" if ddsm else " (indicative: not DDSM's CIFAR-10 network, whose fixed costs differ)"
                networks = record.get("networks", {})
                full = networks.get("w1", {}).get("gflops_per_call")
                for width, claimed in zip(claim.get("widths", []), claim.get("claimed_ratios", [])):
                    got = networks.get(f"w{width:g}", {}).get("gflops_per_call")
                    if full is None or got is None:
                        continue
                    ratio = got / full
                    ok = abs(ratio - claimed) <= tolerance * max(claimed, 0.05) or abs(ratio - claimed) <= 0.01
                    out.append({**common, "dataset": dataset, "metric": f"GFLOPs at width {width:g} / full",
                                "measured": round(ratio, 4), "claimed": claimed,
                                "verdict": ("reproduced" if ok else "not reproduced") + note,
                                "detail": f"{got:.4g} of {full:.4g} GFLOPs per call (this run's network)",
                                "device": record.get("device")})
                continue
            verdict, detail, measured = _stepaware_verdict(claim, part, record)
            out.append({**common, "dataset": dataset, "metric": claim["stepaware"], "measured": measured,
                        "verdict": verdict + (" (indicative: not the paper's dataset, network and FID)"
                                              if verdict in ("reproduced", "partly", "not reproduced") else ""),
                        "detail": detail, "device": record.get("device")})
    columns = ["claim_id", "source", "claim", "dataset", "metric", "measured", "claimed", "verdict", "detail", "device"]
    return pd.DataFrame(out, columns=columns)
