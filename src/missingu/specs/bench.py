"""What ``missingu bench`` measures and its work (:mod:`missingu.bench` measures it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config import ConfigError, choose, positive
from ..task import Work, image_values
from .data import SOURCES, DatasetSpec
from .samplers import SamplerSpec
from .speed import SpeedConfig

PARTS = ("train", "call", "sample", "ops", "curve")
#: what `bench.parts` measures unless asked: `ops` (where the time goes, missingu.ops) and `curve`
#: (loss curves with the same data, seed and recipe, missingu.curve) only on request
DEFAULT_PARTS = ("train", "call", "sample")


@dataclass(frozen=True)
class BenchConfig:
    """What ``missingu bench`` measures: ``variants`` (``eager`` or switches of ``speed`` joined by
    ``+``), ``parts`` (``ops``, where the time goes per operator, and ``curve``, loss curves trained
    ``curve_steps`` steps on ``curve_data`` (a data source; ``None``: the config's first dataset of
    the shape), only when asked), the input shape
    (``shape``; empty: the first dataset's), training batch, steps timed per round after ``warmup``
    untimed ones, ``rounds``, the call and sampling batch sizes, the sampler, and whether to
    include the reference ``Unet``."""

    variants: tuple[str, ...] = ("eager",)
    parts: tuple[str, ...] = DEFAULT_PARTS
    shape: tuple[int, ...] = ()
    train_batch: int = 32
    train_steps: int = 5
    warmup: int = 2
    rounds: int = 2
    call_batches: tuple[int, ...] = (1, 16)
    call_repeats: int = 10
    sample_batches: tuple[int, ...] = (1,)
    sampler: SamplerSpec = field(default_factory=lambda: SamplerSpec("ddim10", "ddim", steps=10))
    reference: bool = True
    peak_tflops: float | None = None
    curve_steps: int = 1000
    curve_data: str | None = None

    def __post_init__(self) -> None:
        if not self.variants:
            raise ConfigError("bench.variants: needs at least one variant (e.g. eager)")
        for v in self.variants:
            SpeedConfig.parse(v)
        for p in self.parts:
            if p not in PARTS:
                raise ConfigError(f"bench.parts: unknown {p!r}; allowed: {', '.join(PARTS)}")
        if self.shape and (len(self.shape) != 3 or min(self.shape) <= 0):
            raise ConfigError(f"bench.shape: {list(self.shape)} is not [C, H, W] with positive sizes")
        for key in ("train_batch", "train_steps", "rounds", "call_repeats", "curve_steps"):
            positive(getattr(self, key), key)
        if self.warmup < 0:
            raise ConfigError(f"bench.warmup: must be zero or positive, got {self.warmup}")
        for key in ("call_batches", "sample_batches"):
            for i, b in enumerate(getattr(self, key)):
                positive(b, f"{key}[{i}]")
        if self.curve_data is not None:
            choose(SOURCES, self.curve_data, "data source", "curve_data")
        if self.peak_tflops is not None:
            positive(self.peak_tflops, "peak_tflops")

    def input_shape(self, datasets: Sequence[DatasetSpec]) -> tuple[int, int, int]:
        """``shape``, or (empty) the first dataset's ``[C, H, W]``."""
        first = datasets[0]
        return tuple(self.shape) or (first.channels, first.size, first.size)


def work(bench: BenchConfig, shape: tuple[int, int, int], networks: int) -> Work:
    """The benchmark: one timed measurement of fixed cost per variant (its compilation included);
    with part ``curve``, ``curve_steps x train_batch`` images of ``shape`` through a training step
    per variant and network."""
    curve = bench.curve_steps * bench.train_batch * image_values(shape) * networks if "curve" in bench.parts else 0
    return Work(train_values=float(curve * len(bench.variants)), measurements=len(bench.variants))
