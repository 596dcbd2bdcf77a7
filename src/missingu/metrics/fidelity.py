"""Pixel-level fidelity of an image ``x`` to a reference ``y``: PSNR and SSIM, one value per image.

Images are float tensors (N, C, H, W) with C = 1 or 3 and values in [0, 1] (the model's [-1, 1]
mapped by ``(v + 1) / 2``); :func:`check_pair` enforces this.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

# SSIM settings of Wang et al. (2004): Gaussian window of 11 taps (torchmetrics and scikit-image both
# derive it from sigma: 2 * int(3.5 sigma + 0.5) + 1 = 11), sigma 1.5, K1 0.01, K2 0.03.
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_MIN_SIDE = SSIM_WINDOW


def check_pair(x: Tensor, y: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` and ``y`` are float (N, C, H, W) tensors of one shape with
    C in {1, 3} and every value in [0, 1] (NaN fails too)."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim != 4 or t.shape[1] not in (1, 3):
            what = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected float images (N, C, H, W) with C = 1 or 3, got a {what}")
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    for name, t in (("x", x), ("y", y)):
        if t.numel() and not (t.min() >= 0 and t.max() <= 1):
            raise ValueError(
                f"{name}: values must lie in [0, 1] (map model output v in [-1, 1] by (v + 1) / 2), "
                f"got min {t.min().item():.4g}, max {t.max().item():.4g}"
            )


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB, shape (N,).

    ``PSNR_i = 10 log10(data_range^2 / MSE_i)``, ``MSE_i = mean over (C, H, W) of (x_i - y_i)^2``,
    computed in float64 and returned in ``x``'s dtype. Identical images (``MSE_i = 0``) give
    ``+inf``: the ratio is unbounded, and a report shows it as such rather than a made-up cap.
    """
    check_pair(x, y)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype)  # mse == 0: log10(inf) = inf


def ssim(x: Tensor, y: Tensor, border: Literal["valid", "reflect"] = "valid") -> Tensor:
    """Structural similarity per image, shape (N,), with torchmetrics'
    ``structural_similarity_index_measure(gaussian_kernel=True, sigma=1.5, kernel_size=11, k1=0.01,
    k2=0.03, data_range=1.0, reduction="none")``.

    With Gaussian-weighted local means ``mu``, variances ``s^2`` and covariance ``s_xy`` (window 11,
    sigma 1.5, population weights), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = 1``::

        SSIM map = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    averaged over channels and pixels. ``border`` picks the pixels:

    * ``"valid"`` (default): only where the 11x11 window lies inside the image, i.e. the map cropped
      by 5 pixels on each side, (H - 10) x (W - 10). This is Wang et al.'s reference definition and
      equals scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=1)`` to float precision (tested).
    * ``"reflect"``: torchmetrics' own reduction, the whole H x W map, the border computed on the
      image reflect-padded by 5 pixels. It differs from ``"valid"`` (by ~1e-2 on 16x16 digits).

    Each side must be at least 11 pixels (the window); smaller images raise ``ValueError``.
    """
    check_pair(x, y)
    h, w = x.shape[-2:]
    if min(h, w) < SSIM_MIN_SIDE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels (its Gaussian window), "
            f"got {h}x{w}"
        )
    if border not in ("valid", "reflect"):
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    with torch.no_grad():
        # imported here: torchmetrics takes 2.5 s to import, and every pipeline job imports this module
        from torchmetrics.functional.image import structural_similarity_index_measure

        per_image, ssim_map = structural_similarity_index_measure(
            x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, data_range=1.0,
            k1=SSIM_K1, k2=SSIM_K2, reduction="none", return_full_image=True,
        )
    if border == "reflect":
        return per_image
    pad = (SSIM_WINDOW - 1) // 2
    return ssim_map[..., pad : h - pad, pad : w - pad].mean(dim=(1, 2, 3))
