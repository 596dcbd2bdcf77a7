"""missingu: continuous U-Net DDPMs ("The Missing U for Efficient Diffusion Models") and
step-aware denoisers (DDSM), with a reproducible pipeline from data to results."""

__version__ = "0.1.0"

from .diffusion import Diffusion, DiffusionConfig  # noqa: E402
from .models import CUNet, CUNetConfig, UNet, UNetConfig, build_model  # noqa: E402
from .samplers import SamplerSpec, sample  # noqa: E402

__all__ = [
    "CUNet", "CUNetConfig", "Diffusion", "DiffusionConfig", "SamplerSpec", "UNet", "UNetConfig",
    "__version__", "build_model", "sample",
]
