"""``missingu profile``: parameters, FLOPs, NFE, latency and memory of every model (CSV)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from .. import profile
from ..config import ConfigError
from ..io import read_rows, write_rows
from ..profile import Shape, check_checkpoints, journal_path, plan
from ..task import write_result
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per model, variant and input shape")
    p.add_argument("--checkpoint", action="append", metavar="DATASET/MODEL=PATH",
                   help="trained weights (ema.pt) for a model at its dataset's shape (repeatable)")
    p.add_argument("--models", metavar="NAME,...", help="profile only these model entries")
    p.add_argument("--shapes", metavar="CxHxW,...", help="profile only these input shapes (e.g. 3x64x64)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of an existing OUT that this run does not measure (profile in parts)")
    options.device(p)
    options.progress(p)


def _parse_shape(text: str) -> Shape:
    """``"3x64x64"`` -> ``(3, 64, 64)``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--shapes: {text!r} is not a shape; write CxHxW, e.g. 3x64x64")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _checkpoint_map(items: Sequence[str]) -> dict[tuple[str, str], Path]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        dataset, slash, model = key.partition("/")
        if not (sep and slash and dataset and model and path):
            raise ConfigError(f"--checkpoint {item!r} must look like DATASET/MODEL=PATH")
        out[(dataset, model)] = Path(path)
    return out


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    device = options.device_of(args, cfg)
    checkpoints = _checkpoint_map(args.checkpoint or [])
    check_checkpoints(cfg, checkpoints)  # unknown names and mismatched files fail here, before any work
    shapes = None if args.shapes is None else [_parse_shape(s) for s in options.names(args.shapes)]
    jobs = plan(cfg, checkpoints, models=options.names(args.models), shapes=shapes)
    earlier = read_rows(args.out) if args.merge and args.out.is_file() else []
    journal = journal_path(args.out)
    log.info("profiling %d rows on %s; each row is kept in %s as it is measured", len(jobs), device, journal)
    result = profile.run(cfg, device, jobs, journal, earlier=earlier, progress=not args.no_progress,
                         on_row=lambda so_far: write_rows(so_far, args.out))
    write_result(result, {"rows": args.out})
    journal.unlink()
    log.info("wrote %s (%d rows of this run, %d kept from before, %s)", args.out, result.record["measured"],
             result.record["kept"], result.record["device_name"] or "no rows")
