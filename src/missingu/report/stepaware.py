"""The step-aware stage's report: the strategies table, which network serves each step, quality
against cost, which steps matter (the importance sweep's heatmap), and the verdicts on the DDSM
claims (``stepaware:`` in the claims file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..models import preset_name
from ..stats import Interval, fd_replicates, frechet_batch, percentile_interval
from ..strategies import label, parse_choice
from . import claims as c_
from .common import save_figure
from .quality import fd_difference


def stepaware_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The step-aware study's strategies (not the search's other candidates), per dataset and phase
    (``search``: the scores on the search's seeds, which chose; ``fresh``: the same strategies
    sampled again from fresh seeds, the scores the verdicts use): quality, the real-vs-real value at
    that number of samples, mean and total GFLOPs, the saving against the full width, seconds per
    image, and each network's share of the visited steps."""
    kept = rows[rows["kind"] != "candidate"].copy()
    if "phase" in kept:
        kept = kept.sort_values("phase", key=lambda p: p.map({"fresh": 0, "search": 1}), kind="stable")
    shares = [c for c in kept.columns if c.startswith("share_")]
    columns = ["dataset", "study", "phase", "strategy", "kind", "samples", "quality", "quality_floor", "mean_gflops",
               "total_gflops", "saving", "seconds_per_image", "network_calls", *shares]
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
    """Quality against mean GFLOPs per call on the search's seeds: the search's candidates (grey),
    the baselines, the random strategies and the searched ones marked; the fresh-seed scores of the
    searched strategies and the baselines (the ones the verdicts use) as open diamonds; the value
    of two real samples at that size dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if "phase" in rows:
        fresh = rows[(rows["phase"] == "fresh") & rows["kind"].isin(["baseline", "search"])]
        if len(fresh):
            ax.scatter(fresh["mean_gflops"], fresh["quality"], facecolors="none", edgecolors="k", marker="D", s=40,
                       label="fresh seeds (reported)")
        rows = rows[rows["phase"] == "search"]
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


def read_importance(path: str | Path) -> pd.DataFrame:
    """The importance sweep's table (``stepaware.importance.csv``); empty when the sweep was off
    (the study then writes a file without rows)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["window", "t_low", "t_high", "network", "change"])


def importance_grid(table: pd.DataFrame) -> pd.DataFrame:
    """The sweep as a grid: one row per network (in the table's order), one column per window
    (window 0 holds the least noisy steps), the quality change against the full width in each cell."""
    networks = list(dict.fromkeys(table["network"]))
    return table.pivot(index="network", columns="window", values="change").reindex(networks).sort_index(axis=1)


def plot_importance_heatmap(table: pd.DataFrame, path: str | Path, title: str = "") -> pd.DataFrame:
    """Which steps matter: for each smaller network (rows) put in place of the full width over one
    window of consecutive steps (columns, labelled by their first and last step ``t``), the change
    in quality against the full width on the same seeds (colour: above 0, red, the smaller network
    costs quality there; a dot where the interval of the change lies wholly above 0, a ring where
    wholly below). Returns the grid plotted."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    grid = importance_grid(table)
    spans = table.drop_duplicates("window").set_index("window").sort_index()
    values = grid.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    bound = bound if bound > 0 else 1.0
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * grid.shape[1] + 2), 0.5 * grid.shape[0] + 1.6))
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", interpolation="nearest",
                      norm=TwoSlopeNorm(0.0, -bound, bound))
    for _, r in table.iterrows():
        low, high = pd.to_numeric(pd.Series([r.get("change_low"), r.get("change_high")]), errors="coerce")
        y, x = grid.index.get_loc(r["network"]), grid.columns.get_loc(r["window"])
        if low > 0:
            ax.plot(x, y, "o", c="k", ms=4)
        elif high < 0:
            ax.plot(x, y, "o", mfc="none", mec="k", ms=5)
    ax.set_yticks(range(len(grid.index)), list(grid.index))
    ax.set_xticks(range(len(grid.columns)), [f"{spans.loc[w, 't_low']}-{spans.loc[w, 't_high']}" for w in grid.columns],
                  rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("window of diffusion steps t (0: least noisy) served by the smaller network")
    ax.set_title(title or "quality change against the full width")
    fig.colorbar(image, ax=ax, label="quality change (lower is better)")
    save_figure(fig, path)
    return grid


def _fresh(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["phase"] == "fresh"] if "phase" in rows else rows.iloc[:0]


def _one(rows: pd.DataFrame, **match: Any) -> pd.Series | None:
    part = rows
    for key, value in match.items():
        part = part[part[key] == value]
    return part.iloc[0] if len(part) else None


def _uses_mix(row: pd.Series) -> bool:
    """Whether a strategy gives a mixed-in model (not a width) some of its steps."""
    return any(k.startswith("share_") and not k.startswith("share_w") and pd.notna(v) and 0 < float(v) < 1
               for k, v in row.items())


def saving_verdict(saving: float, needed: float, quality: str) -> str:
    """A step-aware saving claim: the (exact) FLOPs ``saving`` at least ``needed`` and the quality
    verdict (not worse than the full width beyond the margin) reproduced: *reproduced*; a saving
    short of ``needed`` or a quality surely worse: *not reproduced*; else *inconclusive*."""
    if saving < needed or quality == c_.NOT_REPRODUCED:
        return c_.NOT_REPRODUCED
    return c_.REPRODUCED if quality == c_.REPRODUCED else c_.INCONCLUSIVE


def beats_random_verdict(reference: Tensor, searched: Tensor, randoms: list[Tensor], claims: c_.ClaimsFile
                         ) -> tuple[str, Interval, Tensor]:
    """DDSM's "the search matters": the best random strategy's FD minus the searched one's (positive:
    the search wins), with its paired bootstrap interval (every strategy sampled on the same fresh
    seeds), above 0: (verdict, interval, each arm's FD)."""
    arms = [searched.double(), *(r.double() for r in randoms)]
    ref = reference.double()
    point = torch.stack([frechet_batch(a[None], ref[None])[0] for a in arms])
    reps = fd_replicates(ref, arms, resamples=c_.resamples(claims), seed=claims.get("seed", 0))
    interval = percentile_interval(float(point[1:].min() - point[0]), reps[1:].min(dim=0).values - reps[0],
                                   c_.level(claims), len(arms[0]))
    return c_.decide(interval, 0.0, "above"), interval, point


def _smallest_alone(finals: pd.DataFrame) -> pd.Series | None:
    """The fresh evaluation of the narrowest width on every step (``uniform w<width>``, width < 1)."""
    widths = finals["strategy"].str.extract(r"^uniform w([0-9.]+)$", expand=False).astype(float)
    narrower = widths[widths < 1]
    return None if narrower.empty else finals.loc[narrower.idxmin()]


def _quality_check(claim: c_.Claim, claims: c_.ClaimsFile, feats: Mapping[str, Any], chosen: pd.Series,
                   full: pd.Series, floor_saving: float, control: pd.Series | None) -> tuple[str, str, Interval]:
    """A strategy against the full width on fresh seeds: its saving at least ``floor_saving`` (exact:
    FLOPs), and its quality not worse than the full width's beyond ``tolerance x`` the full width's
    (the paired bootstrap interval of the difference). A positive control guards "not worse": the
    narrowest network alone (``control``) must read surely worse than that margin; where it does
    not (an untrained network, too few samples), equal quality shows nothing and is inconclusive."""
    reference, strategies = feats["reference"], feats["strategies"]
    interval = fd_difference(reference, strategies[chosen["strategy"]], strategies[full["strategy"]], claims)
    margin = claims["tolerance"] * float(full["quality"])
    saving = float(chosen["saving"])
    quality = c_.decide(interval, margin, "below")
    blind = ""
    if quality == c_.REPRODUCED and control is not None:
        seen = fd_difference(reference, strategies[control["strategy"]], strategies[full["strategy"]], claims)
        if c_.decide(seen, margin, "below") != c_.NOT_REPRODUCED:
            quality = c_.INCONCLUSIVE
            blind = (f"; but this check cannot see a loss of that size here: {control['strategy']} alone reads "
                     f"{float(control['quality']):.4g}, a difference of {seen.text()} from the full width, not "
                     f"surely beyond the margin")
    words = saving_verdict(saving, floor_saving, quality)
    detail = (f"{chosen['strategy']}: {saving:.1%} of the FLOPs saved (needed: at least {floor_saving:.1%}); quality "
              f"{float(chosen['quality']):.4g} against the full width's {float(full['quality']):.4g} on "
              f"{int(chosen.get('samples', 0) or 0)} fresh samples, difference {interval.text()} (margin "
              f"{margin:.3g})" + (blind or c_.resolve_note(interval, margin, quality)))
    return words, detail, interval


def _stepaware_verdict(claim: c_.Claim, rows: pd.DataFrame, record: Mapping[str, Any], feats: Mapping[str, Any] | None,
                       claims: c_.ClaimsFile) -> tuple[str, str, Interval | None]:
    """(verdict, detail, interval) of one DDSM claim on one dataset's study, from its fresh-seed
    evaluations and their cached features."""
    finals = _fresh(rows)
    full, searched = _one(finals, strategy="uniform w1"), _one(finals, kind="search")
    if full is None or searched is None:
        return c_.not_measured("the full width and a searched strategy evaluated on fresh seeds"), "", None
    if feats is None:
        return c_.INCONCLUSIVE, "no features cached beside the study: no interval", None
    kind = claim["stepaware"]
    if kind in ("saving", "ddim"):
        if kind == "ddim" and record.get("sampler", {}).get("kind") != "ddim":
            return c_.not_measured("a DDIM sampler in stepaware.sampler"), "", None
        floor_saving = float(claim.get("claimed_saving", 0.0)) - claims["tolerance"]
        return _quality_check(claim, claims, feats, searched, full, max(floor_saving, 1e-9), _smallest_alone(finals))
    if kind == "mix":
        if not _uses_mix(searched):
            return c_.not_measured("a searched strategy that gives a stepaware.mix model some steps"), "", None
        return _quality_check(claim, claims, feats, searched, full, 1e-9, _smallest_alone(finals))
    if kind == "random":
        randoms = finals[finals["kind"] == "random"]
        if randoms.empty:
            return c_.not_measured("random baselines"), "", None
        strategies = feats["strategies"]
        words, interval, point = beats_random_verdict(feats["reference"], strategies[searched["strategy"]],
                                                      [strategies[n] for n in randoms["strategy"]], claims)
        randoms_text = ", ".join(f"{v:.4g}" for v in point[1:].tolist())
        detail = (f"best random strategy minus the searched one on fresh seeds (positive: the search wins): "
                  f"{interval.text()}; searched {float(point[0]):.4g}, random {randoms_text}"
                  + c_.resolve_note(interval, 0.0, words))
        return words, detail, interval
    return f"unknown stepaware check {kind!r}", "", None


def study_runs(rows: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """Each study's rows keyed by (dataset, study); rows without a ``study`` column are one
    dataset's single study, ``main``."""
    rows = rows if "study" in rows else rows.assign(study="main")
    return [((str(d), str(s)), part) for (d, s), part in rows.groupby(["dataset", "study"], sort=False)]


@c_.claim_check("stepaware", stage="stepaware", table="stepaware_vs_claims", words="the step-aware study")
def _judge_stepaware(claim: c_.Claim, measured: tuple[pd.DataFrame, Mapping[str, Any], Mapping[str, Any]],
                     claims: c_.ClaimsFile) -> list[dict[str, Any]]:
    """One row per dataset and study (per width for ``widths``, once per dataset and model), see
    :func:`stepaware_claims`."""
    rows, records, features = measured
    if rows.empty:
        return [{**c_.claim_fields(claim), "verdict": c_.not_measured("stepaware.model, a slimmable model")}]
    out, widths_done = [], set()
    for (dataset, study), part in study_runs(rows):
        record = records.get((dataset, study), {})
        model = record.get("model", {})
        architectures = {model.get("arch"): preset_name(model.get("arch"), model.get("model"))}
        if claim["stepaware"] == "widths":
            if (dataset, model.get("model_name")) in widths_done:  # the same network in another study
                continue
            widths_done.add((dataset, model.get("model_name")))
            networks = record.get("networks", {})
            full = networks.get("w1", {}).get("gflops_per_call")
            for width, claimed in zip(claim.get("widths", []), claim.get("claimed_ratios", [])):
                got = networks.get(f"w{width:g}", {}).get("gflops_per_call")
                if full is not None and got is not None:
                    shape = "x".join(map(str, model.get("image_shape", []))) or None
                    width_setting = c_.setting_of(claim, architectures=architectures, shape=shape)
                    out.append({**c_.width_row(claim, claims, width, claimed, got, full, setting=width_setting,
                                               device=record.get("device"), shape=shape, dataset=dataset),
                                "study": study})
            continue
        mix = record.get("settings", {}).get("mix") or []
        alone = (  # a claim of the slimmable network alone, measured with other models mixed in
            [f"mixes in {', '.join(mix)} (claim: the slimmable network alone)"] if mix and claim["stepaware"] != "mix"
            else [])
        setting = c_.setting_of(claim, architectures=architectures, dataset=dataset,
                                sampler=record.get("sampler", {}).get("kind"),
                                metric="fid" if record.get("quality") == "FID" else "classifier distance",
                                samples=int(part["samples"].max()) if "samples" in part else None,
                                also=alone)
        verdict, detail, interval = _stepaware_verdict(claim, part, record, (features or {}).get((dataset, study)),
                                                       claims)
        fields = {} if interval is None else c_.interval_fields(interval)
        metric = {"random": "best random strategy's quality minus the searched one's (fresh seeds)"}.get(
            claim["stepaware"], "searched strategy's quality minus the full width's (fresh seeds); saving in detail")
        out.append({**c_.claim_fields(claim), "setting": setting, "dataset": dataset, "study": study,
                    "metric": metric, **fields, "verdict": verdict, "detail": detail, "device": record.get("device")})
    return out


def stepaware_claims(rows: pd.DataFrame, records: Mapping[tuple[str, str], Mapping[str, Any]],
                     claims: c_.ClaimsFile, features: Mapping[tuple[str, str], Mapping[str, Any]] | None = None
                     ) -> pd.DataFrame:
    """The DDSM claims (``stepaware:`` in the claims file) against each study on each dataset, from
    the strategies re-evaluated on fresh seeds (never the scores that chose them) and their cached
    ``features``; ``records`` and ``features`` (the study's ``.json`` and ``.features.pt``) are keyed
    by (dataset, study), as :func:`study_runs` groups ``rows``. ``saving``/``ddim``: the searched
    strategy saves at least the claimed share of the FLOPs minus ``tolerance`` (``claimed_saving``)
    and its quality is not worse than the full width's beyond ``tolerance x`` it (the paired
    bootstrap interval of the difference); ``random``: it beats the best random strategy at its
    FLOPs (the interval of the difference above 0); ``mix``: the searched strategy gives a mixed-in
    model some steps and passes the ``saving`` test with any saving; ``widths``: the GFLOPs ratio
    of each width of the study's network to its full width. Each row says whether it was measured
    in the claim's own setting (a study that mixes models in stands in for a claim about the
    slimmable network alone)."""
    return c_.judge_claims("stepaware", (rows, records, features or {}), claims)
