"""``missingu prepare-data``: read (download) one split of a dataset into one file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..data import save_imageset
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--dataset", help="dataset entry name (default: the only one)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    spec = cfg.dataset(args.dataset)
    data = spec.load(args.split)
    save_imageset(data, args.out, dataset=spec.name, split=args.split)
    log.info("wrote %s: %d images of shape %s", args.out, len(data), data.shape)
