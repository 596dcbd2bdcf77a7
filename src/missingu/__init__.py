"""missingu: continuous U-Net DDPMs ("The Missing U for Efficient Diffusion Models") and
step-aware denoisers (DDSM), with a reproducible pipeline from data to results.

The public names below load on first use (PEP 562), so that reading a config or planning a run
(the Snakefile's parse, ``missingu plan``) does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Diffusion": "diffusion", "DiffusionConfig": "diffusion",
    "CUNet": "models", "CUNetConfig": "models", "UNet": "models", "UNetConfig": "models",
    "build_model": "models", "SamplerSpec": "samplers", "sample": "samplers",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first read."""
    if name not in _LAZY:
        raise AttributeError(f"module 'missingu' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
