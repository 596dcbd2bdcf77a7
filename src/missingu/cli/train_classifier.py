"""``missingu train-classifier``: the small classifier of the classifier Frechet distance."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..classifier import SIDECARS, accuracy, save_classifier, train_classifier
from ..data import load_imageset
from ..io import save_json
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--dataset", help="dataset entry name (default: the only one)")
    p.add_argument("--data", required=True, type=Path, help="prepared train split")
    p.add_argument("--test", required=True, type=Path, help="prepared test split (its accuracy)")
    p.add_argument("--out", required=True, type=Path, help="classifier (.pt)")
    options.sidecars(p, SIDECARS)  # --record: what was trained and its accuracies (JSON)
    options.device(p)
    options.progress(p)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    spec = cfg.dataset(args.dataset)
    device = options.device_of(args, cfg)
    train, test = load_imageset(args.data), load_imageset(args.test)
    log.info("training the quality classifier on %s (%d images, %d classes) on %s", spec.name, len(train),
             len(set(train.labels.tolist())), device)
    model, record = train_classifier(train.images, train.labels, cfg.evaluate.classifier, seed=cfg.seed,
                                     device=device, progress=not args.no_progress)
    known = set(record["classes"])
    if len(test) and set(test.labels.tolist()) <= known:
        record["test_accuracy"] = accuracy(model, test.images.to(device), test.labels.to(device))
    else:
        record["test_accuracy"] = None
        record["test_accuracy_note"] = ("the test split's labels are not among the training classes: see "
                                        "holdout_accuracy")
    record.update(dataset=spec.name, device=str(device))
    save_classifier(model, record, args.out)
    save_json(record, options.sidecar_paths(args, SIDECARS)["record"])
    log.info("wrote %s: train accuracy %.3f, holdout %s, test %s", args.out, record["train_accuracy"],
             record.get("holdout_accuracy"), record["test_accuracy"])
