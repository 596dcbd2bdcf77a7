"""``missingu denoise``: a trained model as a Gaussian denoiser of its dataset's test images."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .. import __version__, denoise
from ..config import ConfigError, build
from ..data import load_imageset
from ..denoise import Curve, Scorer
from ..diffusion import Diffusion, DiffusionConfig
from ..measure import environment
from ..models import model_from_meta, preset_name
from ..snapshot import load_snapshot
from ..task import write_result
from ..weights import WeightsUnavailable
from . import options

log = logging.getLogger("missingu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    options.config(p)
    p.add_argument("--checkpoint", required=True, type=Path, help="ema.pt written by train")
    p.add_argument("--data", required=True, type=Path, help="prepared test split (prepare-data --split test)")
    p.add_argument("--out", required=True, type=Path, help="summary CSV (protocol x sigma)")
    options.sidecars(p, denoise.SIDECARS)
    options.torch_home(p, "LPIPS")
    options.device(p)
    options.progress(p)


def run(args: argparse.Namespace) -> None:
    cfg = options.experiment(args)
    dc = cfg.denoise
    blob = load_snapshot(args.checkpoint)
    meta = blob["meta"]
    device = options.device_of(args, cfg)
    data = load_imageset(args.data)
    if list(data.shape) != list(meta["image_shape"]):
        raise ConfigError(f"--data {args.data} holds images of shape {data.shape}; the checkpoint's model "
                          f"takes {tuple(meta['image_shape'])}")
    model = model_from_meta(meta, blob["state_dict"]).to(device).eval()
    diffusion = Diffusion(build(DiffusionConfig, meta["diffusion"], "diffusion"))
    clean = data.images[: dc.num_images].float() / 255
    lpips_model, lpips_note = None, "not computed: denoise.lpips is false"
    if dc.lpips:
        try:
            from ..metrics import load_lpips

            lpips_model, lpips_note = load_lpips(args.torch_home, device), None
        except WeightsUnavailable as err:
            lpips_note = str(err)
            log.warning("LPIPS %s", lpips_note)
    scorer = Scorer(data.shape[-1], lpips_model, lpips_note)
    env = environment(device)
    fixed = {"dataset": meta["dataset"], "model": meta["model_name"], "arch": meta["arch"],
             "preset": preset_name(meta["arch"], meta["model"]),
             "reverse": dc.reverse, "device": env["device"], "device_name": env["device_name"]}
    log.info("denoising %d test images of %s with %s on %s: sigmas %s, protocols %s", len(clean), meta["dataset"],
             meta["model_name"], device, list(dc.sigmas), list(dc.protocols))
    start = time.perf_counter()

    def report(curve: Curve) -> None:
        psnr = curve.values["psnr"]
        log.info("%s sigma %g from step %d: PSNR %.2f dB noisy, %.2f dB at step %d (%.4f s per image)",
                 curve.protocol, curve.sigma, curve.t_start, psnr[0].mean(), psnr[curve.reported_step()].mean(),
                 curve.reported_step(), curve.seconds_per_image)

    result = denoise.run(model, diffusion, clean, dc, scorer, fixed=fixed, seed=cfg.seed, device=device,
                         progress=not args.no_progress, on_curve=report)
    result.record.update(checkpoint=str(args.checkpoint), data=str(args.data), version=__version__,
                         torch=env["torch"], threads=env["threads"])
    paths = {"rows": args.out, **options.sidecar_paths(args, denoise.SIDECARS)}
    write_result(result, paths)
    log.info("wrote %s (+ %s) in %.1f s", args.out, ", ".join(str(paths[k]) for k in denoise.SIDECARS),
             time.perf_counter() - start)
