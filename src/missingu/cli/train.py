"""``missingu train``: train one model on one dataset (resumes from ``OUT_DIR/resume.pt``)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch

from .. import __version__, distributed
from ..config import ConfigError, to_dict
from ..data import ImageSet, load_imageset
from ..diffusion import Diffusion
from ..experiment import ExperimentConfig, run_meta
from ..measure import count_parameters
from ..models import model_from_spec
from ..train import train
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--dataset", help="dataset entry name (default: the only one)")
    p.add_argument("--model", help="model entry name (default: the only one)")
    p.add_argument("--data", type=Path, help="prepared dataset file (default: load the dataset)")
    p.add_argument("--out-dir", required=True, type=Path)
    options.device(p)
    p.add_argument("--restart-on-change", action="store_true",
                   help="a resume.pt of another configuration is moved to OUT_DIR/superseded/ and training "
                        "starts over (default: refuse)")
    options.progress(p)


def _train_data(args: argparse.Namespace, cfg: ExperimentConfig) -> ImageSet:
    if args.data:
        return load_imageset(args.data)
    return cfg.dataset(args.dataset).load("train")


def _launch_processes(args: argparse.Namespace, count: int) -> int:
    """Run this same ``train`` command in ``count`` data-parallel processes with torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
           "-m", "missingu.cli", *args.argv]
    log.info("train.gpus is %d: launching %s", count, " ".join(cmd[:6]))
    return subprocess.run(cmd).returncode


def run(args: argparse.Namespace) -> int:
    cfg = options.experiment(args)
    recipe = cfg.train_for(cfg.model(args.model).name)  # the train section with the model's own keys
    if recipe.gpus > 1 and not distributed.launched():
        return _launch_processes(args, recipe.gpus)
    meta = run_meta(cfg, args.dataset, args.model)
    c, h, w = meta["image_shape"]
    torch.manual_seed(cfg.seed)  # the initial weights, like everything else, follow from the seed
    model = model_from_spec(cfg.model(args.model), c, h)
    device = options.device_of(args, cfg)
    if distributed.launched():
        size = int(os.environ["WORLD_SIZE"])
        if size != recipe.gpus:
            raise ConfigError(f"train.gpus: {recipe.gpus}, but torchrun started {size} processes")
        device = distributed.setup(device)
        torch.set_num_threads(max(1, (args.threads or torch.get_num_threads()) // size))
        if distributed.world()[1] != 0:  # one log: rank 0's
            logging.getLogger().setLevel(logging.WARNING)
    data = _train_data(args, cfg)
    if data.shape != (c, h, w):
        raise ConfigError(f"--data {args.data} holds images of shape {data.shape}, the config wants {(c, h, w)}")
    out = Path(args.out_dir)
    log.info("training %s (%s, %d parameters) on %s (%d images) on %s for %d steps",
             meta["model_name"], meta["arch"], count_parameters(model), meta["dataset"], len(data),
             device, recipe.steps)
    record = {"meta": meta, "config": to_dict(cfg), "version": __version__,
              "parameters": count_parameters(model), "device": str(device)}
    train(model, Diffusion(cfg.diffusion), data.images, recipe, out, seed=cfg.seed, device=device,
          meta=meta, record=record, hflip=meta["hflip"], progress=not args.no_progress,
          on_config_change="restart" if args.restart_on_change else "refuse", speed=cfg.speed)
    return 0
