"""Model registry: architectures by name, presets by name, one ``build_model``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import build, choose
from ..specs.models import (  # noqa: F401  (re-exported: the configs and checks live where a config is read)
    ARCHITECTURE_SPECS,
    ArchitectureSpec,
    CUNetConfig,
    DDPMUNetConfig,
    ModelSpec,
    UNetConfig,
    check_image_size,
    compatible,
    preset_name,
)
from .cunet import CUNet
from .ddpm import DDPMUNet
from .unet import UNet


@dataclass(frozen=True)
class Architecture(ArchitectureSpec):
    """A denoiser family: its config dataclass and named option presets (its spec), and its module class."""

    module_cls: type[nn.Module]


MODULES: dict[str, type[nn.Module]] = {"unet": UNet, "cunet": CUNet, "ddpm": DDPMUNet}
ARCHITECTURES: dict[str, Architecture] = {
    name: Architecture(**vars(spec), module_cls=MODULES[name]) for name, spec in ARCHITECTURE_SPECS.items()
}


def build_model(
    arch: str, config: UNetConfig | CUNetConfig, channels: int, image_size: int
) -> nn.Module:
    """Instantiate architecture ``arch`` for ``channels`` x ``image_size`` x ``image_size`` images."""
    entry = choose(ARCHITECTURES, arch, "architecture", "arch")
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"{arch} needs a {entry.config_cls.__name__}, got {type(config).__name__}")
    check_image_size(config, image_size)
    return entry.module_cls(config, channels=channels)


def model_from_meta(meta: Mapping[str, Any], state_dict: Mapping[str, Any] | None = None) -> nn.Module:
    """Rebuild a model from checkpoint metadata (``arch``, ``model``, ``image_shape``),
    optionally loading weights; returned in eval mode."""
    arch = choose(ARCHITECTURES, meta["arch"], "architecture", "arch")
    config = build(arch.config_cls, meta["model"], "model")
    c, h, _ = meta["image_shape"]
    model = build_model(meta["arch"], config, c, h)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def model_from_spec(spec: ModelSpec, channels: int, image_size: int) -> nn.Module:
    """Build the model a config entry describes."""
    return build_model(spec.arch, spec.resolve(), channels, image_size)


__all__ = [
    "ARCHITECTURES", "CUNet", "CUNetConfig", "DDPMUNet", "DDPMUNetConfig", "ModelSpec", "UNet", "UNetConfig",
    "build_model", "check_image_size", "compatible", "model_from_meta", "model_from_spec", "preset_name",
]
