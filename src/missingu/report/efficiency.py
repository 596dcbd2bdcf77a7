"""The efficiency stage's report: the profile table, the speed benchmark table, and the verdicts on
the cost claims (``measure:`` in the claims file: a cU-Net / U-Net ratio of parameters, FLOPs,
time or training memory) from the profile and from the benchmark's whole-sampler times."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

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
        return c_.INCONCLUSIVE
    if measured >= 1:
        return c_.NOT_REPRODUCED
    if claimed is None or measured <= claimed * (1 + tolerance):
        return c_.REPRODUCED
    return c_.PARTLY


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


@c_.claim_check("measure", stage="efficiency", table="efficiency_vs_claims", words="the efficiency profile")
def _judge_cost(claim: c_.Claim, profile: pd.DataFrame, claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per (U-Net, cU-Net) pair of base profile rows at one input shape and per profile
    column of the claim's measure: the cU-Net / U-Net ratio and its :func:`verdict`."""
    base = profile[profile["variant"] == "base"] if "variant" in profile else profile.iloc[:0]
    measure, claimed = claim["measure"], claim.get("claimed_ratio")
    rows = []
    for shape, u, c in c_.unet_cunet_pairs(base, "shape"):
        paper = u["preset"] == "paper" and c["preset"] in ("paper", "draft")
        for col, label in _columns(profile, measure):
            if pd.isna(u.get(col)) or pd.isna(c.get(col)):
                continue
            ratio = float(c[col]) / float(u[col])
            words = verdict(ratio, claimed, claims["tolerance"], claims["noise_band"], MEASURES[measure][1])
            rows.append({
                **c_.claim_fields(claim), "shape": shape, "metric": label, "claimed": claimed,
                "pair": f"{c['model']} ({c['preset']}) / {u['model']} ({u['preset']})",
                "measured": round(ratio, 4),
                "verdict": words + ("" if paper else " (indicative: not the paper's architectures)"),
                "detail": _detail(measure, ratio, claimed),
                "weights": "trained" if {u["weights"], c["weights"]} == {"trained"} else "initial",
                "device": u["device_name"],
            })
    if not rows:
        rows.append({**c_.claim_fields(claim),
                     "verdict": c_.not_measured("a U-Net and a cU-Net profiled at one shape")})
    return rows


def claims_table(profile: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
    """Every claim of ``config/paper_claims.yaml`` with a verdict in words: the cost claims
    (``measure``) judged on the profile (one row per pair and column, see :func:`verdict`; pairs
    other than the paper's architectures, U-Net ``paper`` with cU-Net ``paper`` or ``draft``, are
    marked indicative), every other claim with the row that says where it is answered."""
    check = c_.CLAIM_CHECKS["measure"]
    rows = [row for claim in claims["claims"]
            for row in (check.judge(claim, profile, claims) if c_.claim_kind(claim) == "measure"
                        else [c_.status_row(claim)])]
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


def speed_claims(bench: pd.DataFrame, claims: c_.ClaimsFile) -> pd.DataFrame:
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
                        **c_.claim_fields(claim), "shape": cr["shape"],
                        "pair": f"{cr['model']} ({cr['preset']}) / {ur['model']} ({ur['preset']})",
                        "metric": f"{cr['sampler']} time per image, batch {int(batch)} ({setting})",
                        "claimed": claimed, "measured": round(ratio, 4),
                        "verdict": verdict(ratio, claimed, claims["tolerance"], claims["noise_band"], True),
                        "detail": _detail("time", ratio, claimed), "weights": "initial",
                        "device": cr["device_name"],
                    })
    return c_.claim_frame(rows)


def plot_claims(table: pd.DataFrame, path: str | Path) -> None:
    """Measured cU-Net / U-Net ratios (bars) against every claimed ratio on that metric (black ticks)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    table = table[table["measured"].notna()]
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
        measured = part.drop_duplicates("metric").set_index("metric")["measured"]
        ax.barh(range(len(metrics)), [measured[m] for m in metrics], color="tab:blue", label="measured")
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

