"""The denoisers' configs and presets by architecture name, and a config's model entry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ConfigError, build, choose, entry_name, positive, to_dict

#: attention kinds per level (missingu.models.layers.ATTENTION builds them)
ATTENTION_KINDS = ("none", "linear", "full")

#: the cU-Net's ODE solvers (missingu.models.ode_block integrates with them) and dynamics
FIXED_STEP_SOLVERS = ("euler", "midpoint", "rk4")
ADAPTIVE_SOLVERS = ("dopri5",)
SOLVERS = {name: name for name in FIXED_STEP_SOLVERS + ADAPTIVE_SOLVERS}
DYNAMICS = ("second_order", "augmented_first_order")
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4}


def _check_levels(mults: Sequence[int], key: str, attention: Sequence[str]) -> None:
    """A U-Net's width multiplier per level (``key``): at least one, each positive, and one
    ``attention`` entry per level."""
    if not mults:
        raise ConfigError(f"{key}: needs at least one level")
    for i, m in enumerate(mults):
        positive(m, f"{key}[{i}]")
    if len(attention) != len(mults):
        raise ConfigError(f"attention: needs one entry per level ({len(mults)}), got {len(attention)}")


@dataclass(frozen=True)
class SolverConfig:
    """How an ODE block is integrated over ``s in [0, 1]``: a fixed-step method with
    ``steps`` steps (NFE = evals per step x steps), or ``dopri5`` with ``rtol``/``atol``."""

    method: str = "rk4"
    steps: int = 1
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = False

    def __post_init__(self) -> None:
        choose(SOLVERS, self.method, "ODE solver", "solver")
        positive(self.steps, "solver_steps")
        positive(self.rtol, "rtol")
        positive(self.atol, "atol")


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the U-Net. ``attention`` has one entry per level: ``none``, ``linear`` or ``full``;
    the middle always uses full attention."""

    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    attention: tuple[str, ...] = ("linear", "linear", "linear", "full")
    attn_heads: int = 4
    attn_dim_head: int = 32
    groups: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        positive(self.dim, "dim")
        _check_levels(self.dim_mults, "dim_mults", self.attention)
        for i, kind in enumerate(self.attention):
            choose(dict.fromkeys(ATTENTION_KINDS), kind, "attention", f"attention[{i}]")
        positive(self.attn_heads, "attn_heads")
        positive(self.attn_dim_head, "attn_dim_head")
        for width in (self.dim, *(self.dim * m for m in self.dim_mults)):
            if width % self.groups:
                raise ConfigError(f"groups: {self.groups} does not divide channel width {width}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must lie in [0, 1), got {self.dropout}")

    @property
    def downsamplings(self) -> int:
        return len(self.dim_mults) - 1


@dataclass(frozen=True)
class CUNetConfig:
    """Shape and solver of the cU-Net. ``channels`` lists the state width per level (the last is
    the bottleneck); ``attention`` has one entry (``none``/``linear``/``full``) per level."""

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    attention: tuple[str, ...] = ("none", "none", "none", "full", "none")
    attn_heads: int = 4
    attn_dim_head: int = 32
    dynamics: Literal["second_order", "augmented_first_order"] = "second_order"
    time_conditioning: bool = True
    solver: str = "rk4"
    solver_steps: int = 1
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = False
    groups: int = 8
    norm: Literal["group", "instance"] = "group"
    stem_norm: bool = False
    func_output: Literal["linear", "softplus_residual"] = "linear"
    transition_act: bool = False
    skip_merge: Literal["project", "concat"] = "project"
    attention_residual: bool = True
    time_embedding: Literal["mlp", "table"] = "mlp"

    def __post_init__(self) -> None:
        if len(self.channels) < 2:
            raise ConfigError("channels: needs at least two levels (one encoder level and the bottleneck)")
        width_rules = ([f"divisible by groups ({self.groups})"] if self.norm == "group" else []) + (
            ["even (second_order dynamics)"] if self.dynamics == "second_order" else [])
        for i, c in enumerate(self.channels):
            positive(c, f"channels[{i}]")
            if (self.norm == "group" and c % self.groups) or (self.dynamics == "second_order" and c % 2):
                raise ConfigError(f"channels[{i}]: {c} must be {' and '.join(width_rules)}")
        if self.channels[0] % 2:
            raise ConfigError(f"channels[0]: the stem halves {self.channels[0]}; it must be even")
        if len(self.attention) != len(self.channels):
            raise ConfigError(
                f"attention: needs one entry per level ({len(self.channels)}), got {len(self.attention)}"
            )
        for i, kind in enumerate(self.attention):
            choose(dict.fromkeys(ATTENTION_KINDS), kind, "attention", f"attention[{i}]")
        if self.dynamics not in DYNAMICS:
            raise ConfigError(f"dynamics: unknown {self.dynamics!r}; allowed: {', '.join(DYNAMICS)}")
        positive(self.attn_heads, "attn_heads")
        positive(self.attn_dim_head, "attn_dim_head")
        _ = self.solver_config  # validates solver, solver_steps, rtol, atol

    @property
    def solver_config(self) -> SolverConfig:
        return SolverConfig(self.solver, self.solver_steps, self.rtol, self.atol, self.adjoint)

    @property
    def downsamplings(self) -> int:
        return len(self.channels) - 1


# the DDPM U-Net's (missingu.models.ddpm) options
_ATTENTION = {"none": None, "full": "full"}
_INIT = {"ddsm": "Xavier-uniform, zero biases, gain 1e-5 on residual and final outputs", "torch": "PyTorch defaults"}
_NORM_GROUPS = {"fixed": "the same groups at every width", "scaled": "the full width's channels per group"}
_CONCAT_SLICING = {"block": "first w (a + b) channels", "parts": "first w a and w b of each part"}


@dataclass(frozen=True)
class DDPMUNetConfig:
    """Shape of the DDPM U-Net; ``attention`` has one entry (``none``/``full``) per level and
    ``widths`` lists the slimmable widths, the first 1.0 (``[1.0]``: a plain network); ``init``,
    ``norm_groups`` and ``concat_slicing`` as in the module docstring (defaults: DDSM's)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention: tuple[str, ...] = ("none", "full", "none", "none")
    dropout: float = 0.1
    groups: int = 32
    widths: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    init: str = "ddsm"
    norm_groups: str = "fixed"
    concat_slicing: str = "block"

    def __post_init__(self) -> None:
        choose(_INIT, self.init, "initialisation", "init")
        choose(_NORM_GROUPS, self.norm_groups, "GroupNorm group rule", "norm_groups")
        choose(_CONCAT_SLICING, self.concat_slicing, "concatenation slicing", "concat_slicing")
        positive(self.ch, "ch")
        positive(self.num_res_blocks, "num_res_blocks")
        positive(self.groups, "groups")
        _check_levels(self.ch_mult, "ch_mult", self.attention)
        for i, kind in enumerate(self.attention):
            choose(_ATTENTION, kind, "attention (DDPM U-Net)", f"attention[{i}]")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must lie in [0, 1), got {self.dropout}")
        if not self.widths or self.widths[0] != 1.0:
            raise ConfigError(f"widths: must start with 1.0 (the full network), got {list(self.widths)}")
        if any(not 0 < w <= 1 for w in self.widths) or len(set(self.widths)) != len(self.widths):
            raise ConfigError(f"widths: distinct fractions in (0, 1], got {list(self.widths)}")
        for width in sorted({self.ch * m for m in (1, *self.ch_mult)}):
            if width % self.groups:
                raise ConfigError(f"groups: {self.groups} does not divide channel width {width}")
            # the active channels must split into whole groups: G groups (fixed) or groups of C / G (scaled)
            unit = self.groups if self.norm_groups == "fixed" else width // self.groups
            for w in self.widths:
                active = width * w
                if active != int(active) or int(active) % unit:
                    rule = (f"norm_groups 'fixed' keeps {self.groups} groups at every width (use norm_groups: scaled "
                            f"or fewer groups)" if self.norm_groups == "fixed"
                            else f"norm_groups 'scaled' keeps groups of {unit} channels")
                    raise ConfigError(
                        f"widths: {w} of {width} channels is {active}, not a whole number of GroupNorm groups; "
                        f"{rule}; use widths that give multiples of {unit}"
                    )

    @property
    def downsamplings(self) -> int:
        return len(self.ch_mult) - 1


@dataclass(frozen=True)
class ArchitectureSpec:
    """A denoiser family as a config sees it: its config dataclass and named option presets
    (:data:`missingu.models.ARCHITECTURE_SPECS` adds the module class)."""

    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]


ARCHITECTURE_SPECS: dict[str, ArchitectureSpec] = {
    "unet": ArchitectureSpec(
        UNetConfig,
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
    "cunet": ArchitectureSpec(
        CUNetConfig,
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
    "ddpm": ArchitectureSpec(
        DDPMUNetConfig,
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
        arch = choose(ARCHITECTURE_SPECS, self.arch, "architecture", "arch")
        choose(arch.presets, self.preset, f"{self.arch} preset", "preset")
        self.resolve()

    def resolve(self) -> UNetConfig | CUNetConfig | DDPMUNetConfig:
        """The architecture config: preset values, then ``options`` on top, validated."""
        arch = ARCHITECTURE_SPECS[self.arch]
        return build(arch.config_cls, {**arch.presets[self.preset], **self.options}, "options")


def preset_name(arch: str | None, config: Mapping[str, Any] | None) -> str:
    """The name of ``arch``'s preset whose config ``config`` (a plain dict, as checkpoints store it)
    is, else ``custom``: which architecture a trained model is, read from its checkpoint."""
    entry = ARCHITECTURE_SPECS.get(arch or "")
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
