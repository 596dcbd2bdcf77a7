"""``missingu evaluate``: sample quality of one set of samples (FID/KID, classifier Frechet distance)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from .. import __version__, evaluate
from ..classifier import load_classifier
from ..config import ConfigError
from ..data import load_imageset, to_uint8
from ..evaluate import QualityScorer
from ..io import InputFileError, load_torch, sidecars
from ..samplers import SIDECARS
from ..task import write_result
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--samples", required=True, type=Path, help="samples (.pt) written by sample")
    p.add_argument("--summary", type=Path, help="their sampling summary (default: SAMPLES with .json)")
    p.add_argument("--classifier", required=True, type=Path, help="written by train-classifier")
    p.add_argument("--data", required=True, type=Path, help="prepared train split (FID's reference)")
    p.add_argument("--test", required=True, type=Path, help="prepared test split (the classifier distance's reference)")
    p.add_argument("--out", required=True, type=Path, help="JSON with every score, the sampler's cost and the device")
    options.sidecars(p, evaluate.SIDECARS)  # --features: the features the scores were computed from (for intervals)
    options.torch_home(p, "Inception")
    options.device(p)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    device = options.device_of(args, cfg)
    blob = load_torch(args.samples, what="samples written by `missingu sample` (images in [-1, 1])")
    images = blob.get("images") if isinstance(blob, dict) else None
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputFileError(f"{args.samples} is not samples written by `missingu sample`")
    summary_path = args.summary or sidecars(args.samples, SIDECARS)["summary"]
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} (the sampling summary of {args.samples}) does not exist")
    summary = json.loads(summary_path.read_text())
    classifier, record = load_classifier(args.classifier, device)
    train, test = load_imageset(args.data), load_imageset(args.test)
    samples = to_uint8(images)
    if tuple(samples.shape[1:]) != train.shape:
        raise ConfigError(f"--samples {args.samples} holds images of shape {tuple(samples.shape[1:])}; the dataset's "
                          f"are {train.shape}")
    meta = blob.get("model", {})
    log.info("evaluating %d samples of %s (%s) on %s", len(samples), meta.get("model_name"), summary["sampler"]["name"],
             device)
    scorer = QualityScorer(classifier, record, train, test, cfg.evaluate, torch_home=args.torch_home,
                           seed=cfg.seed, device=device)
    result = evaluate.run(samples, summary, meta, scorer, record)
    result.record.update(samples=str(args.samples), version=__version__)
    write_result(result, {"record": args.out, **options.sidecar_paths(args, evaluate.SIDECARS)})
    out = result.record
    log.info("wrote %s: classifier FD %.4g (real vs real %.4g), FID %s", args.out, out["classifier_fd"],
             out["classifier_fd_real"], out["fid"])
