"""``missingu sample``: draw samples from a trained model (optionally step-aware, ``--strategy``)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .. import __version__
from ..config import build, derived_seed, to_dict
from ..diffusion import Diffusion, DiffusionConfig
from ..io import save_grid, save_json, save_torch
from ..measure import sync
from ..models import model_from_meta
from ..models.ddpm import is_slimmable
from ..samplers import SIDECARS, SamplerSpec, sample
from ..snapshot import load_snapshot
from ..speed import FastDenoiser, SpeedConfig
from ..strategies import StepAwareDenoiser, Strategy, output_shape, validate, visited_steps
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--checkpoint", required=True, type=Path, help="ema.pt written by train")
    p.add_argument("--sampler", help="sampler entry name (default: the only one)")
    p.add_argument("--out", required=True, type=Path, help="samples (.pt)")
    options.sidecars(p, SIDECARS)  # --summary: the sampling summary (JSON)
    p.add_argument("--grid", type=Path, help="also write a PNG grid")
    p.add_argument("--grid-size", type=int, default=64, help="images in the grid")
    p.add_argument("--strategy", type=Path,
                   help="step-aware strategy (YAML/JSON: a width of the checkpoint's slimmable model or a --mix model "
                        "name per diffusion step; published ones in config/strategies/, e.g. DDSM's "
                        "ddsm_cifar10.yaml for a ddsm model with 1000 steps); DDPM and DDIM samplers")
    p.add_argument("--mix", action="append", metavar="NAME=PATH", help="another model a --strategy names (repeatable)")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    options.device(p)
    options.progress(p)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    spec = cfg.sampler(args.sampler)
    blob = load_snapshot(args.checkpoint)
    device = options.device_of(args, cfg)
    model = model_from_meta(blob["meta"], blob["state_dict"]).to(device)
    denoiser = model if cfg.speed == SpeedConfig() else FastDenoiser(model, cfg.speed, device)
    diffusion = Diffusion(build(DiffusionConfig, blob["meta"]["diffusion"], "diffusion"))
    if args.strategy is not None:
        denoiser = _stepaware_denoiser(args, model, blob["meta"], spec, diffusion.timesteps, device)
    n = args.num_samples or cfg.sample.num_samples
    batch = args.batch_size or cfg.sample.batch_size
    seed = cfg.seed if args.seed is None else args.seed
    shape = blob["meta"]["image_shape"]
    _warm_up(denoiser, shape, min(batch, n), device)
    chunks, calls, start = [], 0, time.perf_counter()
    nfe: int | None = None
    for first in range(0, n, batch):
        seeds = [derived_seed(seed, k) for k in range(first, min(n, first + batch))]
        out = sample(denoiser, diffusion, spec, shape, seeds, device=device, progress=not args.no_progress)
        chunks.append(out.images.cpu())
        calls += out.network_calls
        nfe = None if out.ode_evaluations is None else (nfe or 0) + out.ode_evaluations
        log.info("sampled %d / %d with %s", first + len(seeds), n, spec.name)
    seconds = time.perf_counter() - start
    images = torch.cat(chunks)
    save_torch({"images": images, "sampler": to_dict(spec), "seed": seed, "model": blob["meta"]}, args.out)
    if args.grid:
        save_grid(images[: args.grid_size], args.grid)
    batches = len(chunks)
    save_json({
        "sampler": to_dict(spec), "num_samples": n, "batch_size": batch, "seed": seed,
        "checkpoint": str(args.checkpoint), "model": blob["meta"], "device": str(device),
        "strategy": None if args.strategy is None else str(args.strategy),
        "network_calls_per_batch": calls // batches,
        "ode_evaluations_per_batch": None if nfe is None else nfe // batches,
        "seconds": seconds, "version": __version__,
    }, options.sidecar_paths(args, SIDECARS)["summary"])
    log.info("wrote %s (%d images, %.1f s)", args.out, n, seconds)


def _warm_up(denoiser, shape: list[int], batch: int, device: torch.device) -> None:
    """One untimed network call at the first batch's size, so that the sampling time leaves out the
    device's start-up (CUDA's library handles and first kernels, a CUDA graph's capture)."""
    with torch.no_grad():
        denoiser(torch.zeros(batch, *shape, device=device), torch.zeros(batch, dtype=torch.long, device=device))
    sync(device)


def _stepaware_denoiser(args: argparse.Namespace, model: torch.nn.Module, meta: dict, spec: SamplerSpec,
                        timesteps: int, device: torch.device) -> StepAwareDenoiser:
    """The denoiser of ``--strategy``: widths of the checkpoint's (slimmable) model and the ``--mix``
    models, checked against the strategy before any sampling."""
    strategy = Strategy.load(args.strategy)
    visited_steps(spec.kind, timesteps, spec.steps)  # DDPM or DDIM only
    networks: dict = {}
    if is_slimmable(model):
        networks.update({float(w): model for w in model.config.widths})
    for name, path in options.pairs(args.mix or [], "--mix", "NAME=ema.pt"):
        other = load_snapshot(path)
        networks[name] = model_from_meta(other["meta"], other["state_dict"]).to(device)
    shapes = {c: output_shape(net, meta["image_shape"], device) for c, net in networks.items()}
    validate(strategy, timesteps, list(networks), shapes)
    return StepAwareDenoiser(strategy, networks, model if is_slimmable(model) else None)
