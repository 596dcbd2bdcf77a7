"""Loss curves (``missingu bench --parts curve``): the benchmarked networks, our U-Net and the
reference ``Unet`` among them, each trained by the pipeline's trainer (:func:`missingu.train.train`)
with the same data, seed and recipe, so that "faster" is shown to train the same.

The same for every network: the images (``bench.curve_data``, or the config's first dataset of the
benchmark's shape), the batches (each step's draws from ``step_generator(seed, step)``), the recipe
(the first U-Net entry's ``train`` section with ``bench.train_batch`` images a step for
``bench.curve_steps`` steps; bf16 autocast where the variant has ``autocast``, on CUDA), the fast
paths of the variant; each network starts from ``torch.manual_seed(seed)``. A row per step
(loss, gradient norm, learning rate, seconds) goes to the curve table; the summary row gives the
mean loss of the first and the last window (a tenth of the steps) with its standard error
``sd / sqrt(n)``: two networks train the same when their last windows agree within a few errors.
Under one seed our U-Net draws the reference ``Unet``'s initial weights (module for module), so
their curves start equal and part by float rounding (tested at a small size).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError
from .data import load_split
from .diffusion import Diffusion
from .specs.bench import BenchConfig
from .specs.data import DatasetSpec
from .speed import SpeedConfig
from .task import failure_status
from .train import LOSS_FILE, train


def curve_data(cfg: Any, data: str | None, shape: Sequence[int]) -> DatasetSpec:
    """The dataset the curves train on: the source ``data`` at ``shape``'s size, or (``None``) the
    config's first dataset of ``shape``; a clear error when neither fits."""
    c, h, w = shape
    if data is not None:
        spec = DatasetSpec(name=data, image_size=h)
        if (spec.channels, h) != (c, w):
            raise ConfigError(f"bench.curve_data: {data} has {spec.channels} channel(s); the benchmark's shape is "
                              f"{c}x{h}x{w} (square images of {c} channel(s) needed)")
        return spec
    for spec in cfg.datasets:
        if (spec.channels, spec.size, spec.size) == (c, h, w):
            return spec
    raise ConfigError(f"bench.curve_data: no dataset of the config is {c}x{h}x{w}; name a data source of {c} "
                      f"channel(s) (e.g. photos for 3, digits for 1)")


def window(losses: Sequence[float], first: bool) -> tuple[float, float, int]:
    """Mean, standard error and size of the first or last tenth (at least one) of ``losses``."""
    n = max(1, len(losses) // 10)
    part = list(losses[:n] if first else losses[-n:])
    se = statistics.stdev(part) / math.sqrt(n) if n > 1 else math.nan
    return statistics.fmean(part), se, n


def train_curve(
    build: Callable[[], nn.Module], cfg: Any, unet: str, bench: BenchConfig, speed: SpeedConfig,
    data: DatasetSpec, images: torch.Tensor, diffusion: Diffusion, device: torch.device,
) -> list[dict[str, Any]]:
    """Train ``build()`` (a fresh network) with the curves' recipe; its loss per step."""
    recipe = replace(cfg.train_for(unet), steps=bench.curve_steps, batch_size=bench.train_batch, gpus=1,
                     amp=speed.autocast, log_every=1, checkpoint_every=bench.curve_steps)
    torch.manual_seed(cfg.seed)
    model = build()
    trainer_log = logging.getLogger("missingu.train")
    level = trainer_log.level
    trainer_log.setLevel(logging.WARNING)  # a line per step otherwise: the curve's rows hold them
    try:
        with tempfile.TemporaryDirectory(prefix="missingu-curve-") as tmp:
            train(model, diffusion, images, recipe, tmp, seed=cfg.seed, device=device, hflip=data.hflip,
                  progress=False, speed=speed)
            with open(Path(tmp) / LOSS_FILE, newline="") as fh:
                return [{k: float(v) if k != "step" else int(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    finally:
        trainer_log.setLevel(level)


def curves(entries: Sequence[Any], cfg: Any, bench: BenchConfig, speed: SpeedConfig, shape: Sequence[int],
           diffusion: Diffusion, device: torch.device) -> tuple[DatasetSpec, dict[str, list[dict[str, Any]] | str]]:
    """Each entry's curve (or the error that stopped it), and the dataset they trained on."""
    unet = next((e.name for e in entries if e.arch == "unet"), None)
    if unet is None:
        raise ConfigError("bench.parts: curve trains with the first U-Net entry's recipe; the config has no U-Net")
    data = curve_data(cfg, bench.curve_data, shape)
    images = load_split(data, "train").images
    out: dict[str, list[dict[str, Any]] | str] = {}
    for e in entries:
        try:
            out[e.name] = train_curve(e.build, cfg, unet, bench, speed, data, images, diffusion, device)
        except RuntimeError as err:  # out of memory, a compile failure: that network's row says so
            out[e.name] = failure_status(err)
    return data, out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of one curve: steps, first and last window's mean loss and standard error, time."""
    losses = [r["loss"] for r in rows]
    (first, first_se, n), (last, last_se, _) = window(losses, True), window(losses, False)
    seconds = rows[-1]["seconds"]
    return {"steps": len(rows), "window": n, "loss_first": first, "loss_first_se": first_se,
            "loss_last": last, "loss_last_se": last_se, "seconds": seconds}
