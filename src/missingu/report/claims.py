"""What every verdict on a claim shares.

The verdict words, one set of columns for a claim row, the (U-Net, cU-Net) pairs a verdict
compares, and the registry of claim checks: each claim of ``config/paper_claims.yaml`` names its
*kind* (one of :data:`CLAIM_KINDS`), and the stage whose report module registered that kind
(:func:`claim_check`) judges it. :func:`merge_claims` puts every stage's verdicts into the one
claims table (``results/tables/claims.*``), in the order of the claims file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured yet"

# The columns of every claim row, in every stage's ``*_vs_claims`` table and in the merged one.
# ``measured`` and ``claimed`` are the compared quantity (a ratio, a difference, a saving), as
# ``metric`` and ``detail`` say; a column a stage does not fill stays blank.
CLAIM_COLUMNS = ["claim_id", "source", "claim", "dataset", "shape", "pair", "metric", "claimed", "measured", "verdict",
                 "detail", "weights", "device"]

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
    """One claims table in the order of the claims file: each claim's rows from the table of the
    stage that judges its kind (``tables`` by stage name: the stage's ``*_vs_claims`` table), else
    its :func:`status_row` (a test checks it, it needs what this run lacks, or its stage did not run)."""
    parts = []
    for claim in claims_file["claims"]:
        check = CLAIM_CHECKS.get(claim_kind(claim))
        table = tables.get(check.stage) if check is not None else None
        own = table[table["claim_id"] == claim["id"]] if table is not None and len(table) else None
        if own is None or own.empty:
            parts.append(claim_frame([status_row(claim)]))
        else:
            parts.append(own.reindex(columns=CLAIM_COLUMNS))
    return pd.concat(parts, ignore_index=True) if parts else claim_frame([])
