"""Image metrics on images in [0, 1] (N, C, H, W): PSNR and SSIM (:mod:`.fidelity`), LPIPS
(:mod:`.perceptual`; its AlexNet weights are staged with :mod:`missingu.weights`)."""

from .fidelity import SSIM_MIN_SIDE, check_pair, psnr, ssim
from .perceptual import LPIPS_MIN_SIDE, load_lpips, lpips_distance, lpips_input

__all__ = [
    "LPIPS_MIN_SIDE",
    "SSIM_MIN_SIDE",
    "check_pair",
    "load_lpips",
    "lpips_distance",
    "lpips_input",
    "psnr",
    "ssim",
]
