"""``missingu stepaware``: the step-aware study (DDSM) of a slimmable model: baselines, a search, random
strategies and, when ``stepaware.importance`` is on, which steps matter."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from .. import __version__, stepaware
from ..classifier import load_classifier
from ..config import ConfigError, build, to_dict
from ..data import load_imageset
from ..diffusion import Diffusion, DiffusionConfig
from ..evaluate import QualityScorer
from ..io import InputFileError, write_rows
from ..models import model_from_meta
from ..snapshot import load_snapshot
from ..strategies import PUBLISHED_DIR, published
from ..task import write_result
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--study", metavar="NAME",
                   help="which study: stepaware.name or a key of stepaware.studies (default: stepaware.name)")
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH",
                   help="ema.pt of the study's model and of each model it mixes in (repeatable)")
    p.add_argument("--classifier", type=Path, help="classifier.pt (train-classifier), for quality: classifier")
    p.add_argument("--data", required=True, type=Path, help="prepared train split")
    p.add_argument("--test", required=True, type=Path, help="prepared test split")
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per evaluated strategy")
    p.add_argument("--published", type=Path, action="append",
                   help="a published strategy (YAML), or a folder of them, each evaluated as a baseline where its "
                        f"steps and networks fit the study (repeatable; default: every file of {PUBLISHED_DIR})")
    options.sidecars(p, stepaware.SIDECARS)
    options.torch_home(p, "Inception (for stepaware.quality: fid)")
    options.device(p)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    sa = cfg.study(args.study)
    if not sa.model:
        raise ConfigError("stepaware.model: empty; name the slimmable model entry to study")
    device = options.device_of(args, cfg)
    checkpoints = dict(options.pairs(args.checkpoint or [], "--checkpoint", "MODEL=PATH"))
    wanted = [sa.model, *sa.mix]
    missing = [m for m in wanted if m not in checkpoints]
    if missing:
        raise ConfigError(f"--checkpoint: give {', '.join(f'{m}=ema.pt' for m in missing)} (stepaware.model and "
                          f"stepaware.mix need trained weights)")
    models = {}
    for name in wanted:
        blob = load_snapshot(checkpoints[name])
        if blob["meta"].get("model_name") != name:
            raise InputFileError(f"--checkpoint {name}={checkpoints[name]}: it holds model "
                                 f"{blob['meta'].get('model_name')!r}, not {name!r}")
        models[name] = (model_from_meta(blob["meta"], blob["state_dict"]).to(device), blob["meta"])
    slim, meta = models.pop(sa.model)
    diffusion = Diffusion(build(DiffusionConfig, meta["diffusion"], "diffusion")).to(device)
    shape = tuple(meta["image_shape"])
    spec = cfg.sampler(sa.sampler)
    train, test = load_imageset(args.data), load_imageset(args.test)
    record: dict = {"study": sa.name, "settings": to_dict(sa), "sampler": to_dict(spec), "device": str(device),
                    "version": __version__}
    if sa.quality == "classifier" and args.classifier is None:
        raise ConfigError("--classifier: stepaware.quality is classifier; give the classifier.pt of "
                          "`missingu train-classifier`")
    classifier, crecord = load_classifier(args.classifier, device) if args.classifier else (None, None)
    scorer = QualityScorer(classifier, crecord, train, test, cfg.evaluate, torch_home=args.torch_home,
                           seed=cfg.seed, device=device)
    if sa.quality == "classifier":
        record.update(quality="classifier Frechet distance", reference=scorer.reference_name,
                      quality_floor=scorer.classifier_fd_real(sa.samples))
    else:
        record.update(quality="FID", reference="train split", quality_floor=None)

    def score(images: torch.Tensor) -> tuple[float, torch.Tensor]:
        return scorer.quality_and_features(images, sa.quality)

    log.info("step-aware study %s of %s on %s with %s: %d samples per strategy, %s search%s", sa.name, sa.model,
             device, spec.name, sa.samples, sa.objective, f", importance sweep over {sa.importance.windows} windows"
             if sa.importance.enabled else "")
    fitting = published(diffusion.timesteps, [*slim.config.widths, *models], args.published or PUBLISHED_DIR)
    if fitting:
        log.info("published strategies evaluated as baselines: %s", ", ".join(fitting))
    paths = {"rows": args.out, **options.sidecar_paths(args, stepaware.SIDECARS)}
    result = stepaware.run(slim, {n: m for n, (m, _) in models.items()}, diffusion, spec, shape, score, sa,
                           quality_floor=record["quality_floor"],
                           reference=lambda: scorer.reference_features_of(sa.quality), published=fitting,
                           device=device, on_row=lambda rows: write_rows(rows, args.out), log=log.info)
    result.files["features"]["reference"] = scorer.reference_features_of(sa.quality)
    searched = result.record.pop("searched")
    result.record.update(record, model=meta)
    write_result(result, paths)
    log.info("wrote %s: searched strategy %.4g GFLOPs per call (%.0f%% saved), quality %.4g", args.out,
             searched["mean_gflops"], 100 * searched["saving"], searched["quality"])
