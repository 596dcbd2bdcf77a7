"""The downstream denoising task: a trained DDPM used as a Gaussian denoiser.

A clean test image ``x`` in [0, 1] gets noise of standard deviation ``sigma``: ``y = x + sigma n``.
On the model's [-1, 1] scale ``z = 2 y - 1 = x' + 2 sigma n``, and the forward process at step ``t``
gives ``x_t / sqrt(ab_t) = x' + sqrt((1 - ab_t) / ab_t) eps``. The two noise levels agree where
``(1 - ab) / ab = 4 sigma^2``, i.e. ``ab(t*) = 1 / (1 + 4 sigma^2)``.

Two protocols, both from ``x_start = sqrt(ab(t_start)) z`` and then the reverse chain down to 0:

* **matched start**: ``t_start = t*``, the step whose ``alpha_bar`` is closest to ``1 / (1 + 4 sigma^2)``;
  the result is the image after the last reverse step.
* **step sweep** (the authors' draft protocol): one fixed ``t_start`` for every sigma; the image is
  scored after every reverse step and the best step (highest mean PSNR) is reported.

The image "after reverse step k" (now at step ``t``) is ``x_t / sqrt(ab_t)`` clipped to [-1, 1]
(``ab = 1`` after the last step), mapped to [0, 1]. The reverse update is selectable: ``ddpm``
(ancestral, Ho et al. Alg. 2, seeded noise), ``posterior_mean`` (the same mean without noise) or
``ddim`` (eta 0 with every step, Song et al. Eq. 12). Step 0 of every curve is the noisy input itself
(clipped to [0, 1]).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .config import to_dict
from .diffusion import Diffusion
from .metrics import SSIM_MIN_SIDE, lpips_distance, psnr, ssim
from .samplers import BatchNoise, sample_ddim, sample_ddpm
from .specs.denoise import (  # noqa: F401  (re-exported)
    METRICS,
    PROTOCOLS,
    REVERSE,
    SIDECARS,
    DenoiseConfig,
    matched_step,
    start_steps,
    work,
)
from .task import Result

Reverse = Literal["ddpm", "posterior_mean", "ddim"]


def add_noise(clean: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``y = x + sigma n``, ``n ~ N(0, I)`` from ``generator`` (not clipped: the Gaussian model)."""
    return clean + sigma * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)


def to_unit(x: Tensor) -> Tensor:
    """Model scale [-1, 1] -> [0, 1], clipped."""
    return ((x.clamp(-1, 1) + 1) / 2).float()


Denoiser = Callable[[Tensor, Tensor], Tensor]
StepHook = Callable[[int, int, Tensor], None]


@torch.no_grad()
def reverse_chain(
    model: Denoiser,
    diffusion: Diffusion,
    z: Tensor,
    t_start: int,
    reverse: str = "posterior_mean",
    generator: torch.Generator | None = None,
    on_step: StepHook | None = None,
) -> Tensor:
    """Denoise ``z`` (noisy images on the [-1, 1] scale) from ``x_{t_start} = sqrt(ab(t_start)) z``
    down to step 0 with the samplers of :mod:`missingu.samplers` started at ``t_start``: ``ddpm``
    (ancestral, noise from ``generator``), ``posterior_mean`` (the same without noise) or ``ddim``
    (eta 0, every step); returns the final images in [0, 1].

    After each reverse step ``k = 1 .. t_start + 1`` (now at step ``t = t_start - k``; ``-1``: done)
    ``on_step(k, t, image)`` gets the current image ``x_t / sqrt(ab_t)`` in [0, 1].
    """
    d = diffusion.to(z.device)
    x = d.alpha_bar[t_start].sqrt() * z
    image = to_unit(z)

    def callback(info: dict) -> None:
        nonlocal image
        i = info["t"]
        image = to_unit(info["x"] / d.alpha_bar_prev[i].sqrt())
        if on_step is not None:
            on_step(info["step"] + 1, i - 1, image)

    if reverse == "ddim":
        sample_ddim(model, d, x, noise=None, callback=callback, steps=t_start + 1, eta=0.0, t_start=t_start)
    else:
        noise = BatchNoise(generator) if reverse == "ddpm" else None
        sample_ddpm(model, d, x, noise=noise, callback=callback, t_start=t_start)
    return image


class Scorer:
    """Per-image metrics of denoised images against clean ones: PSNR always; SSIM when the images
    are at least 11x11 (its window); LPIPS with a loaded model. A metric that cannot be computed has
    a note in ``notes[metric]`` (``not computed: ...``) and no values."""

    def __init__(self, image_size: int, lpips_model: nn.Module | None, lpips_note: str | None):
        self.lpips_model = lpips_model
        self.notes = {"psnr": None, "lpips": lpips_note if lpips_model is None else None,
                      "ssim": None if image_size >= SSIM_MIN_SIDE else
                      f"not computed: SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, "
                      f"these are {image_size}x{image_size}"}

    def __call__(self, image: Tensor, clean: Tensor) -> dict[str, Tensor | None]:
        out: dict[str, Tensor | None] = {"psnr": psnr(image, clean).double().cpu()}
        out["ssim"] = None if self.notes["ssim"] else ssim(image, clean).double().cpu()
        if self.lpips_model is not None:
            out["lpips"] = lpips_distance(self.lpips_model, image, clean).double().cpu()
        else:
            out["lpips"] = None
        return out


@dataclass
class Curve:
    """Per-image values of each metric after every reverse step of one (protocol, sigma) run:
    ``values[metric]`` is (steps + 1, N) with row 0 the noisy input; ``None`` where not computed."""

    protocol: str
    sigma: float
    t_start: int
    values: dict[str, Tensor | None]
    seconds_per_image: float

    @property
    def steps(self) -> int:
        return self.values["psnr"].shape[0] - 1

    def best_step(self) -> int:
        """The step with the highest mean PSNR (ties: the earliest)."""
        return int(torch.argmax(self.values["psnr"].clamp(max=1e6).mean(dim=1)).item())

    def reported_step(self) -> int:
        """matched: the last step; sweep: the best step."""
        return self.steps if self.protocol == "matched" else self.best_step()


def run_denoising(
    model: Denoiser,
    diffusion: Diffusion,
    clean: Tensor,
    config: DenoiseConfig,
    scorer: Scorer,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    on_curve: Callable[[Curve], None] | None = None,
) -> tuple[list[Curve], dict[float, dict[str, Tensor]]]:
    """Every (protocol, sigma) of ``config`` on ``clean`` images in [0, 1] (N, C, H, W).

    The noise of sigma number ``j`` comes from ``torch.Generator().manual_seed(seed + j)`` (the
    same noisy images for every model and protocol); the ``ddpm`` update's noise from
    ``seed + 1000 + j``. Returns the curves and, per sigma, ``examples`` clean / noisy / denoised
    (matched start) images for a grid."""
    device = torch.device(device)
    starts, sweep_start = start_steps(config, diffusion.config)
    curves, examples = [], {}
    jobs = [(p, j, s) for p in config.protocols for j, s in enumerate(config.sigmas)]
    bar = tqdm(jobs, desc="denoise", disable=not progress)
    for protocol, j, sigma in bar:
        t_start = starts[sigma] if protocol == "matched" else sweep_start
        noisy = add_noise(clean, sigma, torch.Generator().manual_seed(seed + j))
        chain_gen = torch.Generator().manual_seed(seed + 1000 + j)
        per_step: list[list[dict[str, Tensor | None]]] = [[] for _ in range(t_start + 2)]
        shown: list[Tensor] = []  # the first images after every step, for the example grid
        seconds = 0.0
        for first in range(0, len(clean), config.batch_size):
            c = clean[first:first + config.batch_size].to(device)
            z = (2 * noisy[first:first + config.batch_size] - 1).to(device)
            images: list[Tensor] = []
            start = time.perf_counter()
            reverse_chain(model, diffusion, z, t_start, config.reverse, chain_gen,
                          on_step=lambda k, t, image, images=images: images.append(image))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - start
            for k, image in enumerate([to_unit(z), *images]):  # scored outside the timed chain
                per_step[k].append(scorer(image, c))
                if first == 0:
                    shown.append(image[: config.examples].cpu())
        values = {m: None if per_step[0][0][m] is None else
                  torch.stack([torch.cat([batch[m] for batch in rows]) for rows in per_step]) for m in METRICS}
        curve = Curve(protocol, sigma, t_start, values, seconds / len(clean))
        curves.append(curve)
        if protocol == "matched" or sigma not in examples:
            examples[sigma] = {"clean": clean[: config.examples], "noisy": noisy[: config.examples].clamp(0, 1),
                               "denoised": shown[curve.reported_step()]}
        if on_curve is not None:
            on_curve(curve)
        bar.set_postfix(protocol=protocol, sigma=sigma)
    return curves, examples


def curve_rows(curve: Curve, notes: dict[str, str | None], **fixed: Any) -> list[dict[str, Any]]:
    """One row per step of a curve: mean and standard deviation over images of every metric (a
    metric that was not computed carries its note instead)."""
    rows = []
    for k in range(curve.steps + 1):
        row: dict[str, Any] = {**fixed, "protocol": curve.protocol, "sigma": curve.sigma, "t_start": curve.t_start,
                               "step": k, "t": curve.t_start - k}
        for m in METRICS:
            v = curve.values[m]
            if v is None:
                row[f"{m}_mean"], row[f"{m}_std"] = notes[m], ""
            else:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(v[k])
        rows.append(row)
    return rows


def _mean_std(v: Tensor) -> tuple[float, float]:
    """Mean over images (inf when one came out identical: PSNR of an exact copy) and the standard
    deviation of the finite values (0 with fewer than two)."""
    finite = v[torch.isfinite(v)]
    return float(v.mean()), float(finite.std()) if finite.numel() > 1 else 0.0


def image_rows(curve: Curve, notes: dict[str, str | None], **fixed: Any) -> list[dict[str, Any]]:
    """One row per image at the curve's reported step (matched: the end; sweep: the best step)."""
    k = curve.reported_step()
    rows = []
    for i in range(curve.values["psnr"].shape[1]):
        row: dict[str, Any] = {**fixed, "protocol": curve.protocol, "sigma": curve.sigma, "t_start": curve.t_start,
                               "step": k, "image": i, "seconds_per_image": curve.seconds_per_image}
        for m in METRICS:
            v = curve.values[m]
            row[m] = notes[m] if v is None else float(v[k, i])
        rows.append(row)
    return rows


def summary_rows(curves: Sequence[Curve], notes: dict[str, str | None], **fixed: Any) -> list[dict[str, Any]]:
    """One row per (protocol, sigma): the reported step's mean and standard deviation of each metric,
    the noisy input's, and the wall time per image of the reverse chain."""
    rows = []
    for curve in curves:
        k = curve.reported_step()
        row: dict[str, Any] = {**fixed, "protocol": curve.protocol, "sigma": curve.sigma, "t_start": curve.t_start,
                               "step": k, "seconds_per_image": curve.seconds_per_image}
        for m in METRICS:
            v = curve.values[m]
            if v is None:
                row[m], row[f"{m}_std"], row[f"{m}_noisy"] = notes[m], "", notes[m]
            else:
                row[m], row[f"{m}_std"] = _mean_std(v[k])
                row[f"{m}_noisy"] = float(v[0].mean())
        rows.append(row)
    return rows


def run(
    model: Denoiser,
    diffusion: Diffusion,
    clean: Tensor,
    config: DenoiseConfig,
    scorer: Scorer,
    *,
    fixed: dict[str, Any],
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    on_curve: Callable[[Curve], None] | None = None,
) -> Result:
    """The denoising task as a :class:`~missingu.task.Result`: rows = one per (protocol, sigma)
    (:func:`summary_rows`), tables ``curves`` and ``images``, blob ``examples`` (clean, noisy and
    denoised images per sigma) and the record (settings, notes, start steps, wall time). ``fixed``
    columns (dataset, model, device...) go into every row and the record."""
    start = time.perf_counter()
    curves, examples = run_denoising(model, diffusion, clean, config, scorer, seed=seed, device=device,
                                     progress=progress, on_curve=on_curve)
    record = {**fixed, "images": len(clean), "denoise": to_dict(config), "notes": scorer.notes,
              "seconds": time.perf_counter() - start,
              "t_start": {f"{c.protocol}/{c.sigma}": c.t_start for c in curves}}
    return Result(
        rows=[r for c in curves for r in summary_rows([c], scorer.notes, **fixed)],
        record=record,
        tables={"curves": [r for c in curves for r in curve_rows(c, scorer.notes, **fixed)],
                "images": [r for c in curves for r in image_rows(c, scorer.notes, **fixed)]},
        files={"examples": {"sigmas": list(examples), "examples": [examples[s] for s in examples], **fixed}},
    )


__all__ = [
    "PROTOCOLS", "REVERSE", "Curve", "DenoiseConfig", "Scorer", "add_noise", "curve_rows", "image_rows",
    "matched_step", "reverse_chain", "run", "run_denoising", "start_steps", "summary_rows", "to_unit", "work",
]
