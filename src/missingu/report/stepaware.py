"""The step-aware stage's report: the strategies table, which network serves each step, quality
against cost, and the verdicts on the DDSM claims (``stepaware:`` in the claims file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import to_dict
from ..models.ddpm import DDPMUNetConfig
from ..strategies import label, parse_choice
from . import claims as c_
from .common import save_figure


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


def _stepaware_verdict(claim: c_.Claim, rows: pd.DataFrame, record: Mapping[str, Any]
                       ) -> tuple[str, str, Any]:
    """(verdict, detail, measured) of one DDSM claim on one dataset's study."""
    def one(name: str) -> pd.Series | None:
        part = rows[rows["strategy"] == name]
        return part.iloc[0] if len(part) else None

    full, searched = one("uniform w1"), next((r for _, r in rows[rows["kind"] == "search"].iterrows()), None)
    if full is None or searched is None:
        return c_.not_measured("the full width and a searched strategy"), "", None
    floor = float(full.get("quality_floor", 0) or 0)
    worse = float(searched["quality"]) - float(full["quality"])
    kind = claim["stepaware"]
    if kind in ("saving", "ddim"):
        if kind == "ddim" and record.get("sampler", {}).get("kind") != "ddim":
            return c_.not_measured("a DDIM sampler in stepaware.sampler"), "", None
        saving = float(searched["saving"])
        detail = (f"searched: {saving:.0%} of the FLOPs saved, quality {float(searched['quality']):.4g} against the "
                  f"full width's {float(full['quality']):.4g} (real-vs-real floor {floor:.4g})")
        if saving <= 0:
            return c_.NOT_REPRODUCED, detail, saving
        return (c_.REPRODUCED if worse <= floor else c_.PARTLY), detail, saving
    if kind == "random":
        randoms = rows[rows["kind"] == "random"]
        if randoms.empty:
            return c_.not_measured("random baselines"), "", None
        best_random = float(randoms["quality"].min())
        detail = (f"searched {float(searched['quality']):.4g} against random strategies at the same FLOPs: "
                  f"best {best_random:.4g}, mean {float(randoms['quality'].mean()):.4g}")
        return (c_.REPRODUCED if float(searched["quality"]) < best_random else c_.NOT_REPRODUCED), detail, \
            float(searched["quality"]) - best_random
    if kind == "mix":
        mixed = [r for _, r in rows[rows["kind"] != "candidate"].iterrows()
                 if any(c.startswith("share_") and not c.startswith("share_w") and 0 < float(r[c]) < 1
                        for c in rows.columns)]
        if not mixed:
            return c_.not_measured("a model in stepaware.mix used at some steps"), "", None
        best = min(mixed, key=lambda r: float(r["quality"]))
        return c_.REPRODUCED, (f"{best['strategy']} mixes networks per step: quality {float(best['quality']):.4g}, "
                              f"{float(best['saving']):.0%} of the full width's FLOPs saved"), float(best["saving"])
    return f"unknown stepaware check {kind!r}", "", None


@c_.claim_check("stepaware", stage="stepaware", table="stepaware_vs_claims", words="the step-aware study")
def _judge_stepaware(claim: c_.Claim, measured: tuple[pd.DataFrame, Mapping[str, Mapping[str, Any]]],
                     claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per dataset (per width for ``widths``), see :func:`stepaware_claims`."""
    rows, records = measured
    if rows.empty:
        return [{**c_.claim_fields(claim), "verdict": c_.not_measured("stepaware.model, a slimmable model")}]
    out = []
    for dataset, part in rows.groupby("dataset", sort=False):
        record = records.get(dataset, {})
        common = {**c_.claim_fields(claim), "dataset": dataset, "device": record.get("device")}
        if claim["stepaware"] == "widths":
            ddsm = record.get("model", {}).get("model") == to_dict(DDPMUNetConfig())
            note = "" if ddsm else " (indicative: not DDSM's CIFAR-10 network, whose fixed costs differ)"
            networks = record.get("networks", {})
            full = networks.get("w1", {}).get("gflops_per_call")
            for width, claimed in zip(claim.get("widths", []), claim.get("claimed_ratios", [])):
                got = networks.get(f"w{width:g}", {}).get("gflops_per_call")
                if full is None or got is None:
                    continue
                ratio = got / full
                ok = abs(ratio - claimed) <= claims["tolerance"] * max(claimed, 0.05) or abs(ratio - claimed) <= 0.01
                out.append({**common, "metric": f"GFLOPs at width {width:g} / full", "measured": round(ratio, 4),
                            "claimed": claimed, "verdict": (c_.REPRODUCED if ok else c_.NOT_REPRODUCED) + note,
                            "detail": f"{got:.4g} of {full:.4g} GFLOPs per call (this run's network)"})
            continue
        verdict, detail, value = _stepaware_verdict(claim, part, record)
        judged = verdict in (c_.REPRODUCED, c_.PARTLY, c_.NOT_REPRODUCED)
        out.append({**common, "metric": claim["stepaware"], "measured": value, "detail": detail,
                    "verdict": verdict + (" (indicative: not the paper's dataset, network and FID)" if judged else "")})
    return out


def stepaware_claims(rows: pd.DataFrame, records: Mapping[str, Mapping[str, Any]], claims: c_.ClaimsFile
                     ) -> pd.DataFrame:
    """The DDSM claims (``stepaware:`` in the claims file) against each dataset's study. ``widths``
    compares the measured GFLOPs ratio of each width to the full one with the claimed ratios;
    ``saving``/``ddim``: the searched strategy saves FLOPs with quality within the real-vs-real
    floor of the full width's; ``random``: it beats the random strategies at its FLOPs; ``mix``: a
    strategy mixes another model in. Our datasets, networks and quality measure differ from the
    paper's: such rows are indicative."""
    return c_.judge_claims("stepaware", (rows, records), claims)
