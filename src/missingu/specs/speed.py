"""The fast-path switches of training and sampling (:mod:`missingu.speed` applies them)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("missingu.speed")

CUDA_ONLY = ("autocast", "cuda_graphs", "data_on_device")


@dataclass(frozen=True)
class SpeedConfig:
    """Fast-path switches (see the module docstring); all off: plain eager float32."""

    autocast: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_ode: bool = False
    fused_adamw: bool = False
    sdpa: bool = False
    cuda_graphs: bool = False
    data_on_device: bool = False

    @classmethod
    def switches(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, text: str) -> SpeedConfig:
        """``"eager"`` -> all off; ``"autocast+channels_last"`` -> those two on."""
        if text == "eager":
            return cls()
        names = text.split("+")
        allowed = cls.switches()
        for name in names:
            if name not in allowed:
                raise ConfigError(f"variant {text!r}: unknown switch {name!r}; allowed: eager, or switches "
                                  f"joined by '+' from {', '.join(allowed)}")
        return cls(**{n: True for n in names})

    @property
    def name(self) -> str:
        """The inverse of :meth:`parse`."""
        on = [n for n in self.switches() if getattr(self, n)]
        return "+".join(on) if on else "eager"

    def on(self, device: torch.device) -> SpeedConfig:
        """This config with the CUDA-only switches off on a non-CUDA ``device`` (warning once)."""
        if device.type == "cuda":
            return self
        dropped = [n for n in CUDA_ONLY if getattr(self, n)]
        if not dropped:
            return self
        log.warning("speed: %s need%s a CUDA device; off on %s", ", ".join(dropped),
                    "s" if len(dropped) == 1 else "", device.type)
        return dataclasses.replace(self, **{n: False for n in dropped})

    def unavailable(self, device: torch.device) -> list[str]:
        """The switches of this config that do nothing on ``device``."""
        return [] if device.type == "cuda" else [n for n in CUDA_ONLY if getattr(self, n)]
