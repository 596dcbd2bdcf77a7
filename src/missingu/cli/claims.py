"""``missingu claims``: every claim of the claims file beside what the stages measured for it (one table)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from ..config import ConfigError
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--claims-file", required=True, type=Path, help="config/paper_claims.yaml")
    p.add_argument("--table", action="append", metavar="STAGE=CSV", default=[],
                   help="a stage's *_vs_claims.csv (repeatable; a stage not given leaves its claims as "
                        "'measured by ...')")
    p.add_argument("--out", required=True, type=Path, help="the merged table (CSV; the .md goes beside)")
    options.log(p)


def run(args: argparse.Namespace) -> None:
    import pandas as pd

    from .. import report

    claims = yaml.safe_load(args.claims_file.read_text())
    stages = {check.stage for check in report.CLAIM_CHECKS.values()}
    tables = {}
    for stage, path in options.pairs(args.table, "--table", "STAGE=CSV"):
        if stage not in stages:
            raise ConfigError(f"--table {stage}={path}: no stage {stage!r} judges claims; allowed: "
                              f"{', '.join(sorted(stages))}")
        tables[stage] = pd.read_csv(path)
    merged = report.merge_claims(claims, tables)
    csv_path, md_path = report.write_table(merged, args.out.with_suffix(""))
    log.info("wrote %s and %s: %d rows for %d claims", csv_path, md_path, len(merged), len(claims["claims"]))
