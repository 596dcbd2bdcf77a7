"""``missingu plan``: every job a config runs, its estimated GPU- or CPU-hours, totals, before running."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import plan as plan_
from ..config import ConfigError
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="plan for GPUs (default: as the config's device says; auto: whether nvidia-smi is found, "
                        "as the pipeline decides)")
    p.add_argument("--devices", type=int, default=1, help="GPUs (or machines) the jobs share, for the wall time")
    p.add_argument("--bench", action="append", type=Path, metavar="CSV",
                   help="measured `missingu bench` CSV to take training and sampling rates from (repeatable; "
                        "default: results/measured/*/bench*.csv and results/profile/bench.csv of this machine's GPU)")
    p.add_argument("--device-name", help="which device's rows of the benchmark CSVs to use (as the rows spell it; "
                                         "default: this machine's CUDA device, or the first row's with --bench)")
    p.add_argument("--totals", action="store_true", help="only the totals, not every job")
    p.add_argument("--out", type=Path, help="also write the job table as CSV")


def _on_gpu(args: argparse.Namespace, device: str) -> bool:
    return args.gpu if args.gpu is not None else plan_.uses_gpu(device)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    if args.devices < 1:
        raise ConfigError(f"--devices: {args.devices}; at least 1")
    gpu = _on_gpu(args, cfg.device)
    rates = None
    if gpu:
        missing = [str(p) for p in args.bench or () if not p.is_file()]
        if missing:
            raise ConfigError(f"--bench {missing[0]}: no such file")
        name = args.device_name or (plan_.device_name() if not args.bench else None)
        if args.bench or name:
            rates = plan_.read_rates(args.bench or plan_.measured_files(), name)
    jobs = plan_.jobs(cfg, gpu, rates)
    print(plan_.format_plan(jobs, gpu, args.devices, rates, per_job=not args.totals))
    if args.out:
        plan_.write_plan(jobs, args.out)
        log.info("wrote %s (%d jobs)", args.out, len(jobs))
