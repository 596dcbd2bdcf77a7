"""The efficiency stage's report: the profile table, the speed benchmark table, and the verdicts on
the cost claims (``measure:`` in the claims file: a cU-Net / U-Net ratio of parameters, FLOPs,
time or training memory) from the profile and from the benchmark's whole-sampler times."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..stats import Interval, bootstrap_indices, percentile_interval
from . import claims as c_
from .common import message_figure, save_figure


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


# A claim's ``measure``: what it compares (words) and the profile column (``time``: every latency
# and sampling-time column).
MEASURES: dict[str, str] = {
    "parameters": "parameters",
    "flops": "FLOPs per call",
    "time": "time",
    "train_memory": "training-step memory",
}
_MEASURE_COLUMN = {"parameters": "params_total", "flops": "flops_per_call", "train_memory": "train_step_mib"}


def _columns(profile: pd.DataFrame, measure: str) -> list[tuple[str, str]]:
    """The profile columns a measure compares, with the metric's words."""
    if measure == "time":
        return [(col, f"time per call, batch {col.removeprefix('latency_ms_b')}") if col.startswith("latency_ms_b")
                else (col, f"time to sample a batch, {col.removeprefix('sample_s_')}")
                for col in profile.columns if col.startswith(("latency_ms_b", "sample_s_"))]
    column = _MEASURE_COLUMN[measure]
    return [(column, MEASURES[measure])] if column in profile.columns else []


def _repeats(row: pd.Series, column: str) -> torch.Tensor | None:
    """The repeat times behind a median column (``latency_repeats_ms_b<batch>``, ``s_per_image_rounds``)."""
    text = row.get(column)
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return None
    values = [float(v) for v in str(text).split()]
    return torch.tensor(values, dtype=torch.float64) if len(values) >= 2 else None


def ratio_interval(unet: torch.Tensor | None, cunet: torch.Tensor | None, estimate: float, claims: c_.ClaimsFile,
                   seed: int = 0) -> Interval:
    """The interval of a time ratio (cU-Net / U-Net) from each model's repeats: the ratio of the
    medians of repeats resampled independently (the two models' repeats are not paired); no
    interval (NaN) without repeats."""
    if unet is None or cunet is None:
        return Interval(estimate, math.nan, math.nan, c_.level(claims), 1, "one timed run")
    b = c_.resamples(claims)
    iu, ic = bootstrap_indices(len(unet), b, seed), bootstrap_indices(len(cunet), b, seed + 1)
    replicates = cunet[ic].median(dim=1).values / unet[iu].median(dim=1).values
    n = min(len(unet), len(cunet))
    return percentile_interval(estimate, replicates, c_.level(claims), n, "bootstrap of repeats")


def _detail(measure: str, interval: Interval, claimed: float | None) -> str:
    ratio = interval.estimate
    if measure == "time":
        change = "faster" if ratio < 1 else "slower"
        said = f"{abs(1 - ratio):.0%} {change}"
        wanted = "" if claimed is None else f"; claimed up to {1 - claimed:.0%} faster"
    else:
        said = f"{ratio:.1%} of the U-Net's {MEASURES[measure]}"
        wanted = "" if claimed is None else f"; claimed {claimed:.0%}"
    spread = "" if interval.method == "exact" else f"; ratio {interval.text()}"
    return said + wanted + spread


def _cost_row(claim: c_.Claim, claims: c_.ClaimsFile, interval: Interval, *, measure: str, label: str,
              shape: str, u: pd.Series, c: pd.Series) -> dict[str, Any]:
    """One verdict row on a cost ratio (see :func:`missingu.report.claims.cost_verdict`)."""
    claimed = claim.get("claimed_ratio")
    words = c_.cost_verdict(interval, claimed, claims["tolerance"])
    threshold = 1.0 if claimed is None else claimed * (1 + claims["tolerance"])
    setting = c_.setting_of(claim, architectures={"unet": u["preset"], "cunet": c["preset"]}, shape=shape)
    return {
        **c_.claim_fields(claim), "setting": setting, "shape": shape, "metric": label, "claimed": claimed,
        "pair": f"{c['model']} ({c['preset']}) / {u['model']} ({u['preset']})", **c_.interval_fields(interval),
        "verdict": words, "detail": _detail(measure, interval, claimed) + c_.resolve_note(interval, threshold, words),
        "weights": "trained" if {u.get("weights"), c.get("weights")} == {"trained"} else "initial",
        "device": u["device_name"],
    }


@c_.claim_check("measure", stage="efficiency", table="efficiency_vs_claims", words="the efficiency profile")
def _judge_cost(claim: c_.Claim, profile: pd.DataFrame, claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per (U-Net, cU-Net) pair of profile rows at one input shape (the configured models,
    ``base``, and the papers' presets counted at the papers' shapes, ``count``) and per profile
    column of the claim's measure. Parameters and FLOPs are exact; a time ratio carries the
    interval of its repeats (none for a single timed run: inconclusive); an adaptive sampler's time
    at initial weights is *not comparable* (its network calls follow the random weights, not the
    architecture's cost), shown with both models' calls."""
    variant = profile["variant"] if "variant" in profile else pd.Series([], dtype=object)
    measure = claim["measure"]
    rows = []
    for kind in ("count", "base"):
        for shape, u, c in c_.unet_cunet_pairs(profile[variant == kind], "shape"):
            for col, label in _columns(profile, measure):
                if pd.isna(u.get(col)) or pd.isna(c.get(col)):
                    continue
                estimate = float(c[col]) / float(u[col])
                common = dict(measure=measure, label=label, shape=shape, u=u, c=c)
                if measure != "time":
                    interval = Interval.exact(estimate)
                    if measure == "train_memory":
                        interval = Interval(estimate, estimate, estimate, 1.0, 1, "one measurement")
                    rows.append(_cost_row(claim, claims, interval, **common))
                    continue
                name = col.removeprefix("sample_s_")
                adaptive = col.startswith("sample_s_") and str(u.get(f"sample_adaptive_{name}")) == "True"
                if adaptive and "trained" not in (u["weights"], c["weights"]):
                    row = _cost_row(claim, claims, Interval.exact(estimate), **common)
                    cu, cc = u.get(f"sample_calls_{name}"), c.get(f"sample_calls_{name}")
                    calls = ("network calls not recorded" if pd.isna(cu) or pd.isna(cc)
                             else f"{int(cu)} network calls (U-Net), {int(cc)} (cU-Net)")
                    rows.append({**row, "low": None, "high": None,
                                 "verdict": f"{c_.NOT_COMPARABLE} (adaptive steps at initial weights)",
                                 "detail": f"{estimate:.3g}x the U-Net's time with {calls}"})
                    continue
                repeats = col.replace("latency_ms_b", "latency_repeats_ms_b") if col.startswith("latency") else None
                interval = ratio_interval(_repeats(u, repeats) if repeats else None,
                                          _repeats(c, repeats) if repeats else None, estimate, claims)
                row = _cost_row(claim, claims, interval, **common)
                if adaptive and pd.notna(u.get(f"sample_calls_{name}")) and pd.notna(c.get(f"sample_calls_{name}")):
                    row["detail"] += (f"; network calls {int(u[f'sample_calls_{name}'])} (U-Net), "
                                      f"{int(c[f'sample_calls_{name}'])} (cU-Net)")
                rows.append(row)
    if not rows:
        rows.append({**c_.claim_fields(claim),
                     "verdict": c_.not_measured("a U-Net and a cU-Net profiled at one shape")})
    return rows


def _width_rows(claim: c_.Claim, profile: pd.DataFrame, claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """A DDSM width claim (``stepaware: widths``) in its own setting: the GFLOPs ratio of each width
    of the counted ``ddsm`` preset to its full width, against the claimed ratio (exact counts)."""
    if "width" not in profile:
        return []
    counted = profile[(profile["variant"] == "count") & profile["width"].notna()]
    rows = []
    for (arch, preset, shape), part in counted.groupby(["arch", "preset", "shape"], sort=False):
        flops = {float(w): float(f) for w, f in zip(part["width"], part["flops_per_call"])}
        full = flops.get(1.0)
        for width, claimed in zip(claim.get("widths", []), claim.get("claimed_ratios", [])):
            if full is None or float(width) not in flops:
                continue
            rows.append(c_.width_row(claim, claims, width, claimed, flops[float(width)] / 1e9, full / 1e9,
                                  setting=c_.setting_of(claim, architectures={arch: preset}, shape=shape),
                                  shape=shape, device=part["device_name"].iloc[0]))
    return rows


def claims_table(profile: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """The claims the efficiency stage answers: the cost claims (``measure``; one row per pair and
    column, :func:`_judge_cost`) and, in their own setting, DDSM's width claims (the counted
    ``ddsm`` preset). Other claims are answered by their stages (the merged claims table)."""
    check = c_.CLAIM_CHECKS["measure"]
    rows = []
    for claim in claims["claims"]:
        if c_.claim_kind(claim) == "measure":
            rows += check.judge(claim, profile, claims)
        elif claim.get("stepaware") == "widths":
            rows += _width_rows(claim, profile, claims)
    return c_.claim_frame(rows)


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


def bench_curve_table(curves: pd.DataFrame, z: float = 1.96) -> pd.DataFrame:
    """Loss curves (``missingu bench --parts curve``, the per-step CSV), one row per run (``source``,
    variant) and network: the last tenth's mean loss and, against the U-Net's curve of the same run,
    the mean step-by-step difference over that tenth with its interval ``mean +- z sd / sqrt(n)``.
    Every network saw the same batch at each step, so the differences are paired: the batch's own
    noise cancels, and an interval holding 0 means no difference is seen at this length."""
    if "source" not in curves:
        curves = curves.assign(source="")
    rows = []
    for (source, variant), run in curves.groupby(["source", "variant"], sort=False):
        loss = run.pivot_table(index="step", columns="model", values="loss").sort_index()
        window = loss.iloc[-max(1, len(loss) // 10):]
        unets = run.loc[run["arch"] == "unet", "model"]  # the curves' own U-Net, whatever its name
        unet = unets.iloc[0] if len(unets) else None
        for model in loss.columns:
            row = {"source": source, "variant": variant, "model": model, "steps": len(loss),
                   "loss_last": float(window[model].mean())}
            if unet is not None and model != unet:
                d = (window[model] - window[unet]).dropna()
                half = z * float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else math.nan
                mean = float(d.mean())
                if math.isnan(half):
                    reading = "too few steps for an interval"
                elif mean - half > 0:
                    reading = "higher than the U-Net's"
                else:
                    reading = "lower than the U-Net's" if mean + half < 0 else "no difference seen"
                row.update(vs_unet=mean, low=mean - half, high=mean + half, reading=reading)
            rows.append(row)
    return pd.DataFrame(rows)


def plot_bench_curves(curves: pd.DataFrame, path: str | Path, smooth: int = 25) -> None:
    """Each network's loss per step (a running mean over ``smooth`` steps), one panel per run."""
    import matplotlib.pyplot as plt

    if "source" not in curves:
        curves = curves.assign(source="")
    runs = list(curves.groupby(["source", "variant"], sort=False))
    fig, axes = plt.subplots(1, len(runs), squeeze=False, figsize=(6 * len(runs), 4))
    for ax, ((source, variant), run) in zip(axes[0], runs):
        for model, part in run.groupby("model", sort=False):
            part = part.sort_values("step")
            ax.plot(part["step"], part["loss"].rolling(smooth, min_periods=1).mean(), label=model)
        ax.set(xlabel="step", ylabel=f"loss (running mean of {smooth})", title=f"{source} {variant}".strip())
        ax.legend()
    save_figure(fig, path)


def speed_claims(bench: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """The inference-time claims (``measure: time``) against ``missingu bench``'s whole-sampler time
    per image, cU-Net over U-Net, at each sampling batch size: once with both models eager
    (float32) and once with each at its fastest measured variant (fast paths on); the interval
    from the benchmark's rounds (``s_per_image_rounds``; none in CSVs written before it was kept)."""
    sample = bench[(bench["part"] == "sample") & (bench["status"] == "ok")]
    rows = []
    for claim in claims["claims"]:
        if claim.get("measure") != "time":
            continue
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
                    variants = "both eager, float32" if how == "eager" else (
                        f"each at its fastest: {cr['model']} {cr['variant']}, {ur['model']} {ur['variant']}")
                    interval = ratio_interval(_repeats(ur, "s_per_image_rounds"), _repeats(cr, "s_per_image_rounds"),
                                              ratio, claims)
                    label = f"{cr['sampler']} time per image, batch {int(batch)} ({variants})"
                    row = _cost_row(claim, claims, interval, measure="time", label=label, shape=cr["shape"],
                                    u=ur, c=cr)
                    rows.append({**row, "weights": "initial"})
    return c_.claim_frame(rows)


def plot_claims(table: pd.DataFrame, path: str | Path) -> None:
    """Measured cU-Net / U-Net ratios (bars, with their intervals) against every claimed ratio on that
    metric (black ticks), one panel per shape and pair."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    table = table[table["measured"].notna() & table["pair"].notna()]
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
        first = part.drop_duplicates("metric").set_index("metric")
        values = [float(first.loc[m, "measured"]) for m in metrics]
        low = [v - float(first.loc[m, "low"]) if pd.notna(first.loc[m, "low"]) else 0.0
               for m, v in zip(metrics, values)]
        high = [float(first.loc[m, "high"]) - v if pd.notna(first.loc[m, "high"]) else 0.0
                for m, v in zip(metrics, values)]
        ax.barh(range(len(metrics)), values, xerr=[low, high], color="tab:blue", label="measured (interval)")
        claimed = part[part["claimed"].notna()]
        ax.scatter(claimed["claimed"], [metrics.index(m) for m in claimed["metric"]], color="black",
                   marker="|", s=300, label="claimed", zorder=3)
        ax.set_yticks(range(len(metrics)), metrics)
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("cU-Net / U-Net")
        ax.invert_yaxis()
    axes[0, 0].legend(loc="lower right")
    save_figure(fig, path)

