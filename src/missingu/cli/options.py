"""Options and helpers shared by several commands, each defined once."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import io
from ..config import ConfigError, apply_overrides
from ..experiment import ExperimentConfig, load_experiment, parse_experiment, resolve_device
from ..weights import DEFAULT_TORCH_HOME

if TYPE_CHECKING:
    import torch


def config(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` or ``--config-json JSON`` (one of them), ``--set KEY=VALUE``, ``--log``, ``--threads``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="experiment config (YAML)")
    src.add_argument("--config-json", metavar="JSON", help="the experiment config inline, as JSON (the pipeline's way)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    log(p)
    p.add_argument("--threads", type=int, help="torch CPU threads")


def log(p: argparse.ArgumentParser) -> None:
    """``--log FILE``: also log to this file."""
    p.add_argument("--log", type=Path, help="also log to this file")


def device(p: argparse.ArgumentParser) -> None:
    """``--device``: instead of the config's ``device``."""
    p.add_argument("--device", help="override the config's device")


def progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar (the pipeline's jobs log instead)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def torch_home(p: argparse.ArgumentParser, weights: str) -> None:
    """``--torch-home``: where metric ``weights`` are staged (``hub/checkpoints/`` inside)."""
    p.add_argument("--torch-home", type=Path, default=DEFAULT_TORCH_HOME,
                   help=f"where the {weights} weights are staged (hub/checkpoints/ inside; default %(default)s)")


def sidecars(p: argparse.ArgumentParser, suffixes: Mapping[str, str]) -> None:
    """``--<name> PATH`` for each file a command writes beside its ``--out`` (its stage's ``SIDECARS``)."""
    for name, suffix in suffixes.items():
        p.add_argument(f"--{name}", type=Path, help=f"default: OUT with {suffix}")


def sidecar_paths(args: argparse.Namespace, suffixes: Mapping[str, str]) -> dict[str, Path]:
    """Where each sidecar goes: the option when given, else ``--out`` with its suffix."""
    given = {name: getattr(args, name) for name in suffixes if getattr(args, name) is not None}
    return {**io.sidecars(args.out, suffixes), **given}


def experiment(args: argparse.Namespace) -> ExperimentConfig:
    """The validated experiment config of ``--config`` or ``--config-json``, with ``--set`` applied."""
    if args.config_json is not None:
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config-json is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError("--config-json must hold a JSON object")
        return parse_experiment(apply_overrides(data, args.set or ()))
    return load_experiment(args.config, args.set or ())


def device_of(args: argparse.Namespace, cfg: ExperimentConfig) -> torch.device:
    """``--device`` if given, else the config's ``device`` (``auto``: CUDA when there is one)."""
    return resolve_device(args.device or cfg.device)


def names(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; ``None`` stays ``None`` (the option was not given)."""
    return None if text is None else [name for name in text.split(",") if name]


def pairs(items: Sequence[str], option: str, form: str) -> list[tuple[str, Path]]:
    """``NAME=PATH`` items of a repeatable option, in order; a malformed one names ``form``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option} {item!r}: write {form}")
        out.append((key, Path(value)))
    return out


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table on stdout, columns padded."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in (header, ["-" * w for w in widths], *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
