"""``missingu bench``: training images/s, FLOPs utilisation, memory and sampling latency (CSV)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import bench as bench_
from ..bench import BenchConfig
from ..config import build, to_dict
from ..io import write_rows
from ..task import write_result
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per model, variant, part and batch")
    p.add_argument("--models", metavar="NAME,...", help="only these model entries (the reference follows the U-Net)")
    p.add_argument("--variants", metavar="V,...",
                   help="instead of bench.variants: eager, or speed switches joined by '+' (autocast+compile)")
    p.add_argument("--parts", metavar="P,...", help="instead of bench.parts: train, call, sample, ops, curve")
    p.add_argument("--ops-out", type=Path, help="with part ops: each operator's self time (CSV; default: "
                   "OUT with .ops.csv for .csv)")
    p.add_argument("--curve-out", type=Path, help="with part curve: each network's loss per step (CSV; default: "
                   "OUT with .curve.csv for .csv)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s, for MFU")
    options.device(p)


def run(args: argparse.Namespace) -> int:
    cfg = options.experiment(args)
    device = options.device_of(args, cfg)
    changes = {k: tuple(options.names(v)) for k, v in (("variants", args.variants), ("parts", args.parts)) if v}
    if args.peak_tflops is not None:
        changes["peak_tflops"] = args.peak_tflops
    bench = build(BenchConfig, {**to_dict(cfg.bench), **changes}, "bench")
    log.info("benchmarking on %s: variants %s, parts %s", device, ", ".join(bench.variants), ", ".join(bench.parts))
    result = bench_.run(cfg, bench, device, models=options.names(args.models),
                        on_row=lambda so_far: write_rows(so_far, args.out))
    paths = {"rows": args.out}
    for name, given, what in (("ops", args.ops_out, "operators' self times"), ("curve", args.curve_out, "loss curves")):
        if name in result.tables:
            paths[name] = given or args.out.with_suffix(f".{name}.csv")
            log.info("%s: %s", what, paths[name])
    write_result(result, paths)
    for r in result.rows:  # failures are kept as rows (the table shows them), not a failed job
        if str(r["status"]).startswith("failed"):
            log.error("bench %s %s %s: %s", r["model"], r["variant"], r["part"], r["status"])
    log.info("wrote %s (%d rows, %d failed, %s)", args.out, result.record["rows"], result.record["failed"],
             result.record["device_name"])
    return 0
