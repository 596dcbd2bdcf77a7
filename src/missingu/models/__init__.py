"""Model registry: architectures by name, presets by name, one ``build_model``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..config import ConfigError, build, choose, entry_name, to_dict
from .cunet import CUNet, CUNetConfig
from .ddpm import DDPMUNet, DDPMUNetConfig
from .unet import UNet, UNetConfig


@dataclass(frozen=True)
class Architecture:
    """A denoiser family: its config dataclass, its module class and named option presets."""

    config_cls: type
    module_cls: type[nn.Module]
    presets: Mapping[str, Mapping[str, Any]]


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(
        UNetConfig,
        UNet,
        {
            # denoising-diffusion-pytorch 1.8.3 Unet(dim=64, dim_mults=(1, 2, 4, 8))
            "paper": {},
            # embedded default: 16x16 digits on a CPU
            "digits": {"dim": 16, "dim_mults": (1, 2, 4), "attention": ("none", "none", "full")},
            # unit tests
            "tiny": {
                "dim": 8, "dim_mults": (1, 2), "attention": ("none", "full"),
                "attn_heads": 2, "attn_dim_head": 4, "groups": 4,
            },
        },
    ),
    "cunet": Architecture(
        CUNetConfig,
        CUNet,
        {
            # widths and attention of the authors' draft code (64x64x3 input), this package's choices
            "paper": {},
            # the authors' draft network (Sergio20f/cDDPM cUNet.py at 6d7b2d7): 8,811,875 parameters
            "draft": {
                "dynamics": "augmented_first_order", "time_conditioning": False, "norm": "instance",
                "stem_norm": True, "func_output": "softplus_residual", "transition_act": True,
                "skip_merge": "concat", "attention_residual": False, "time_embedding": "table",
            },
            "digits": {"channels": (16, 32, 64), "attention": ("none", "none", "full")},
            "tiny": {
                "channels": (16, 16), "attention": ("none", "full"),
                "attn_heads": 2, "attn_dim_head": 4, "groups": 4,
            },
        },
    ),
    "ddpm": Architecture(
        DDPMUNetConfig,
        DDPMUNet,
        {
            # the DDPM CIFAR-10 U-Net of the DDSM code, slimmable to 1.0 / 0.75 / 0.5 / 0.25, with its
            # initialisation, GroupNorm groups and concatenation slicing
            "ddsm": {},
            # embedded default: 16x16 digits on a CPU; 4 groups cannot stay fixed at width 0.25 (2 channels),
            # so groups keep their channels, and the rest stays this package's choice too
            "digits": {"ch": 8, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attention": ("none", "full", "none"),
                       "dropout": 0.0, "groups": 4, "init": "torch", "norm_groups": "scaled",
                       "concat_slicing": "parts"},
            # unit tests
            "tiny": {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attention": ("none", "full"), "dropout": 0.0,
                     "groups": 2, "widths": (1.0, 0.5), "init": "torch", "norm_groups": "scaled",
                     "concat_slicing": "parts"},
        },
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """One model entry of a config: a unique ``name``, an ``arch``, a ``preset`` and
    ``options`` overriding the preset's keys. Its place in the experiment matrix: the
    ``datasets`` it is trained on and the ``samplers`` it is sampled with (``None``: every
    entry of the config), and ``train``, its recipe's keys on top of the config's ``train``
    section (checked by the experiment, which knows both)."""

    name: str
    arch: str
    preset: str = "paper"
    options: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None
    samplers: tuple[str, ...] | None = None
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        entry_name(self.name)
        for key in ("datasets", "samplers"):
            names = getattr(self, key)
            if names is not None and (not names or len(set(names)) < len(names)):
                raise ConfigError(f"{key}: a list of distinct entry names, at least one; got {list(names)!r} "
                                  f"(leave the key out for every entry)")
        arch = choose(ARCHITECTURES, self.arch, "architecture", "arch")
        choose(arch.presets, self.preset, f"{self.arch} preset", "preset")
        self.resolve()

    def resolve(self) -> UNetConfig | CUNetConfig | DDPMUNetConfig:
        """The architecture config: preset values, then ``options`` on top, validated."""
        arch = ARCHITECTURES[self.arch]
        return build(arch.config_cls, {**arch.presets[self.preset], **self.options}, "options")


def preset_name(arch: str | None, config: Mapping[str, Any] | None) -> str:
    """The name of ``arch``'s preset whose config ``config`` (a plain dict, as checkpoints store it)
    is, else ``custom``: which architecture a trained model is, read from its checkpoint."""
    entry = ARCHITECTURES.get(arch or "")
    if entry is None or config is None:
        return "custom"
    for name, values in entry.presets.items():
        if to_dict(build(entry.config_cls, values, "preset")) == dict(config):
            return name
    return "custom"


def check_image_size(config: UNetConfig | CUNetConfig, image_size: int) -> None:
    """The U-Nets halve the image ``downsamplings`` times; the size must allow it exactly."""
    factor = 2**config.downsamplings
    if image_size < factor or image_size % factor:
        raise ConfigError(
            f"image_size: {image_size} cannot be halved {config.downsamplings} times by this model "
            f"({config.downsamplings + 1} levels); use a multiple of {factor}, e.g. "
            f"{max(factor, (image_size + factor - 1) // factor * factor)}"
        )


def compatible(config: UNetConfig | CUNetConfig | DDPMUNetConfig, shape: Sequence[int]) -> bool:
    """Whether a model config can take square ``(C, H, W)`` inputs (enough halvings of the image size)."""
    try:
        check_image_size(config, shape[1])
    except ConfigError:
        return False
    return shape[1] == shape[2]


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
