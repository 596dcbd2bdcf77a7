"""What every verdict on a claim shares.

The verdict words and the one rule that gives them (:func:`decide`): a measured effect carries an
interval (:class:`missingu.stats.Interval`); a claim is *reproduced* when the whole interval lies
on the claim's side of its threshold (the claimed size, or the equivalence margin of "comparable"),
*not reproduced* when it lies wholly on the other side, *inconclusive* otherwise (the detail says
the interval and about how many samples would resolve it). Cost claims add *partly*: the cU-Net is
surely cheaper, but surely by less than claimed.

Also here: one set of columns for a claim row, the (U-Net, cU-Net) pairs a verdict compares, the
setting a row was measured in against the claim's own (``own``, or ``stand-in: <what differs>``),
and the registry of claim checks: each claim of ``config/paper_claims.yaml`` names its *kind*
(one of :data:`CLAIM_KINDS`), and the stage whose report module registered that kind
(:func:`claim_check`) judges it. :func:`merge_claims` puts every stage's verdicts into the one
claims table (``results/tables/claims.*``), in the order of the claims file, each claim's
own-setting rows first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..stats import LEVEL, RESAMPLES, Interval

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured yet"

NOT_COMPARABLE = "not comparable"

# The columns of every claim row, in every stage's ``*_vs_claims`` table and in the merged one.
# ``measured`` (with its interval ``low``..``high`` at ``level``, from ``n`` samples, images or
# repeats) and ``claimed`` are the compared quantity (a ratio, a difference, a saving), as
# ``metric`` and ``detail`` say; ``setting`` is ``own`` or ``stand-in: <what differs from the
# claim's setting>``; ``study`` names the step-aware study of a row; a column a stage does not
# fill stays blank.
CLAIM_COLUMNS = ["claim_id", "source", "claim", "setting", "dataset", "study", "shape", "pair", "metric", "claimed",
                 "measured", "low", "high", "n", "verdict", "detail", "weights", "device"]

# How a claim says it is tested: exactly one of these keys (see the head of the claims file).
CLAIM_KINDS = ("measure", "tested_by", "denoise", "quality", "stepaware", "needs")

Claim = Mapping[str, Any]
ClaimsFile = Mapping[str, Any]
Judge = Callable[[Claim, Any, ClaimsFile], list[dict[str, Any]]]


def claim_fields(claim: Claim) -> dict[str, Any]:
    """The columns that name a claim: its id, source and words."""
    return {"claim_id": claim["id"], "source": claim["source"], "claim": claim["claim"]}


def not_measured(needs: str) -> str:
    """The verdict of a claim this run could not measure, with what it needs."""
    return f"{NOT_MEASURED} (needs: {needs})"


def level(claims_file: ClaimsFile) -> float:
    """The intervals' level (the claims file's ``level``, default 0.95)."""
    return float(claims_file.get("level", LEVEL))


def resamples(claims_file: ClaimsFile) -> int:
    """Bootstrap resamples per interval (the claims file's ``resamples``, default 1000)."""
    return int(claims_file.get("resamples", RESAMPLES))


def decide(interval: Interval, threshold: float, side: str) -> str:
    """The one verdict rule: ``side`` is where the claim puts the effect (``below`` or ``above``
    ``threshold``): *reproduced* when the whole interval is there (strictly: an effect of exactly
    the threshold, a tie, does not reproduce "better"), *not reproduced* when the whole interval is
    on the other side or on the threshold, *inconclusive* otherwise (or when there is no interval)."""
    low, high = interval.low, interval.high
    if not (pd.notna(low) and pd.notna(high)):
        return INCONCLUSIVE
    if side == "below":
        return REPRODUCED if high < threshold else NOT_REPRODUCED if low >= threshold else INCONCLUSIVE
    if side == "above":
        return REPRODUCED if low > threshold else NOT_REPRODUCED if high <= threshold else INCONCLUSIVE
    raise ValueError(f"side {side!r}: allowed: below, above")


def cost_verdict(interval: Interval, claimed: float | None, tolerance: float) -> str:
    """A cU-Net / U-Net cost ratio (smaller is better) against a claimed ratio: :func:`decide` below
    ``claimed x (1 + tolerance)`` (below 1 for a claim of direction only, ``claimed`` None); an
    interval wholly above the claimed size but wholly below 1 is *partly* (cheaper, by less)."""
    if claimed is None:
        return decide(interval, 1.0, "below")
    words = decide(interval, claimed * (1 + tolerance), "below")
    if words == NOT_REPRODUCED and interval.high < 1:
        return PARTLY
    return words


def interval_fields(interval: Interval, digits: int = 4) -> dict[str, Any]:
    """The ``measured``, ``low``, ``high`` and ``n`` columns of an interval."""
    def r(v: float) -> float | None:
        return None if v is None or not pd.notna(v) else round(float(v), digits)

    return {"measured": r(interval.estimate), "low": r(interval.low), "high": r(interval.high),
            "n": interval.n or None}


def resolve_note(interval: Interval, threshold: float, words: str) -> str:
    """For an inconclusive verdict: about how many samples would resolve it (from the interval's width)."""
    if words != INCONCLUSIVE:
        return ""
    n = interval.samples_to_resolve(threshold)
    return "" if n is None else f"; about {n:,} would resolve it"


# The presets each ``architectures`` value of a claim's ``setting`` stands for.
SETTING_ARCHITECTURES = {"paper": {"unet": ("paper",), "cunet": ("paper", "draft")}, "ddsm": {"ddpm": ("ddsm",)}}


def setting_of(claim: Claim, *, also: Sequence[str] = (), **measured: Any) -> str:
    """``own`` when what a row measured (``architectures``: {arch: preset}, ``shape``, ``dataset``,
    ``sampler``: kind, ``metric``, ``samples``) matches the claim's ``setting``, else ``stand-in:``
    and what differs, then ``also`` (differences the caller knows of that the setting keys do not
    name). Keys the claim's setting does not name, or the row does not give, are not compared."""
    want = claim.get("setting") or {}
    differs = []
    presets = measured.get("architectures")
    if "architectures" in want and presets:
        allowed = SETTING_ARCHITECTURES[want["architectures"]]
        if any(preset not in allowed.get(arch, ()) for arch, preset in presets.items()):
            got = ", ".join(f"{arch} {preset}" for arch, preset in presets.items())
            differs.append(f"{got} (claim: the {want['architectures']} presets)")
    for key, got in (("shapes", measured.get("shape")), ("datasets", measured.get("dataset"))):
        if key in want and got is not None and str(got) not in [str(v) for v in want[key]]:
            differs.append(f"{got} (claim: {', '.join(map(str, want[key]))})")
    for key in ("sampler", "metric"):
        got = measured.get(key)
        if key in want and got is not None and got != want[key]:
            differs.append(f"{got} (claim: {want[key]})")
    samples = measured.get("samples")
    if "samples" in want and samples is not None and int(samples) < int(want["samples"]):
        differs.append(f"{int(samples):,} samples (claim: {int(want['samples']):,})")
    differs.extend(also)
    return "own" if not differs else "stand-in: " + "; ".join(differs)


def claim_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Claim rows as a table with :data:`CLAIM_COLUMNS` (blank where a row has no value)."""
    return pd.DataFrame(list(rows), columns=CLAIM_COLUMNS)


def claim_kind(claim: Claim) -> str:
    """The one key of :data:`CLAIM_KINDS` a claim has; ``ValueError`` naming the claim otherwise."""
    kinds = [k for k in CLAIM_KINDS if k in claim]
    if len(kinds) != 1:
        raise ValueError(f"claim {claim.get('id')!r}: needs exactly one of {', '.join(CLAIM_KINDS)}; has "
                         f"{', '.join(kinds) or 'none'}")
    return kinds[0]


def unet_cunet_pairs(frame: pd.DataFrame, by: str | Sequence[str], arch: str = "arch"
                     ) -> Iterator[tuple[Any, pd.Series, pd.Series]]:
    """Every (U-Net, cU-Net) pair of rows that agree on ``by`` (a shape, a dataset and sampler...):
    ``(key, unet_row, cunet_row)``, in the order the rows appear."""
    if frame.empty:
        return
    for key, group in frame.groupby(by, sort=False):
        for _, u in group[group[arch] == "unet"].iterrows():
            for _, c in group[group[arch] == "cunet"].iterrows():
                yield key, u, c


@dataclass(frozen=True)
class ClaimCheck:
    """How claims of one kind are judged: by ``stage``, into ``results/tables/<table>.md``;
    ``words`` name the measurement; ``judge(claim, measured, claims_file)`` returns its rows."""

    kind: str
    stage: str
    table: str
    words: str
    judge: Judge


CLAIM_CHECKS: dict[str, ClaimCheck] = {}


def claim_check(kind: str, *, stage: str, table: str, words: str) -> Callable[[Judge], Judge]:
    """Register the judge of the claims of ``kind`` (a decorator, used by each stage's report module)."""
    if kind not in CLAIM_KINDS:
        raise ValueError(f"claim kind {kind!r}: allowed: {', '.join(CLAIM_KINDS)}")

    def register(judge: Judge) -> Judge:
        CLAIM_CHECKS[kind] = ClaimCheck(kind, stage, table, words, judge)
        return judge

    return register


def judge_claims(kind: str, measured: Any, claims_file: ClaimsFile) -> pd.DataFrame:
    """The rows of every claim of ``kind`` judged on ``measured`` (what that kind's stage measured)."""
    check = CLAIM_CHECKS[kind]
    rows = [row for claim in claims_file["claims"] if claim_kind(claim) == kind
            for row in check.judge(claim, measured, claims_file)]
    return claim_frame(rows)


def status_row(claim: Claim) -> dict[str, Any]:
    """The row of a claim that no measurement of this table answers: checked by a test, not
    measurable yet, or measured by another stage (named, with its table)."""
    kind = claim_kind(claim)
    if kind == "tested_by":
        verdict = f"checked by the tests: {claim['tested_by']}"
    elif kind == "needs":
        verdict = not_measured(claim["needs"])
    else:
        check = CLAIM_CHECKS[kind]
        verdict = f"measured by {check.words}: results/tables/{check.table}.md"
    return {**claim_fields(claim), "verdict": verdict}


def merge_claims(claims_file: ClaimsFile, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One claims table in the order of the claims file: each claim's rows from every stage's table
    (``tables`` by stage name: the stages' ``*_vs_claims`` tables; the stage that judges its kind,
    and any other that answers it in another setting, as the efficiency stage does for the width
    claims), its own-setting rows first; a claim no table answers gets its :func:`status_row`
    (a test checks it, it needs what this run lacks, or its stage did not run)."""
    parts = []
    frames = [t for t in tables.values() if len(t)]
    for claim in claims_file["claims"]:
        own = [t[t["claim_id"] == claim["id"]] for t in frames]
        own = [t for t in own if len(t)]
        if not own:
            parts.append(claim_frame([status_row(claim)]))
            continue
        rows = pd.concat([t.reindex(columns=CLAIM_COLUMNS) for t in own], ignore_index=True)
        first = rows["setting"].fillna("").astype(str).eq("own").map({True: 0, False: 1})
        parts.append(rows.assign(_first=first).sort_values("_first", kind="stable").drop(columns="_first"))
    return pd.concat(parts, ignore_index=True) if parts else claim_frame([])


def own_setting_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many own-setting rows carry each verdict word (the first word of ``verdict``): the only
    rows a count of reproduced claims may use."""
    own = table[table["setting"].fillna("").astype(str).eq("own")]
    words = own["verdict"].astype(str).map(_verdict_word)
    found = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE)
    return {w: int((words == w).sum()) for w in found if (words == w).any()}


def _verdict_word(text: str) -> str:
    for word in (NOT_REPRODUCED, REPRODUCED, PARTLY, INCONCLUSIVE):
        if text.startswith(word):
            return word
    return text


def width_row(claim: Claim, claims: ClaimsFile, width: float, claimed: float, got: float, full: float, *,
              setting: str, device: Any, shape: str | None = None, dataset: str | None = None) -> dict[str, Any]:
    """The row of one width of a width claim: the exact GFLOPs ratio within ``tolerance`` (relative,
    at least 0.01 absolute) of the claimed ratio."""
    ratio = got / full
    margin = max(claims["tolerance"] * max(claimed, 0.05), 0.01)
    words = REPRODUCED if abs(ratio - claimed) <= margin else NOT_REPRODUCED
    return {**claim_fields(claim), "setting": setting, "dataset": dataset, "shape": shape,
            "metric": f"GFLOPs at width {width:g} / full", "claimed": claimed,
            **interval_fields(Interval.exact(ratio)), "verdict": words,
            "detail": f"{got:.4g} of {full:.4g} GFLOPs per call; within {margin:.3g} of the claimed ratio counts",
            "device": device}
