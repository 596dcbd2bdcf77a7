"""Typed, validated configuration.

A config file is YAML data; at the CLI boundary it becomes frozen dataclasses. Every
section rejects keys it does not know and values of the wrong type, naming the key
(as a dotted path) and what is allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def choose(registry: Mapping[str, T], name: str, what: str, key: str | None = None) -> T:
    """Look ``name`` up in a registry; an unknown name raises listing the valid ones."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        where = f"{key}: " if key else ""
        raise ConfigError(
            f"{where}unknown {what} {name!r}; allowed: {', '.join(sorted(registry))}"
        ) from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _float_hint(value: Any) -> str:
    """YAML 1.1 (PyYAML, Snakemake) reads ``2e-3`` as text: a float needs a dot, ``2.0e-3``."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    return f" (YAML reads {value} as text; write it with a dot: {number!r})"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not a {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}{_float_hint(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # programming error


def build(cls: type[T], data: Mapping[str, Any] | None, key: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ``ConfigError``.

    Missing keys take the dataclass defaults; a field without a default is required.
    ``key`` is the dotted path of ``data`` in the file, used in messages.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(key, unknown[0])}: unknown key; allowed keys of {key or 'the config'}: "
            f"{', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        sub = _join(key, name)
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # raised by __post_init__, naming keys relative to cls
        raise ConfigError(_join(key, str(err))) from None


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) from nested dataclasses, for JSON and checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# Entry names become folder and file names and Snakemake wildcard values: letters, digits, ``_``,
# ``.`` and ``-``, starting with a letter or digit (so never ``..``, a hidden file or an option).
# The schema's ``name`` pattern is this one (tested).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def entry_name(value: str, key: str = "name") -> None:
    """Raise ``ConfigError`` unless ``value`` is safe as a file name and a wildcard value."""
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        raise ConfigError(
            f"{key}: {value!r} cannot name files; use letters, digits, '_', '.' and '-', starting with a "
            f"letter or digit"
        )


def positive(value: float, key: str) -> None:
    """Raise ``ConfigError`` unless ``value > 0``."""
    if not value > 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")


def non_negative(value: float, key: str) -> None:
    """Raise ``ConfigError`` unless ``value >= 0``."""
    if not value >= 0:
        raise ConfigError(f"{key}: must be zero or positive, got {value!r}")


def in_range(value: float, low: float, high: float, key: str) -> None:
    """Raise ``ConfigError`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ConfigError(f"{key}: must lie in [{low}, {high}], got {value!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping document raises ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (value parsed as YAML) to nested config data.

    List items are addressed by their ``name``: ``models.unet.preset=tiny``.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        path, raw = item.split("=", 1)
        parts = path.split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                matches = [x for x in node if isinstance(x, dict) and x.get("name") == part]
                if not matches:
                    names = [x.get("name") for x in node if isinstance(x, dict)]
                    raise ConfigError(f"override {item!r}: no entry named {part!r}; names: {names}")
                node = matches[0]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is not a mapping")
                node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def derived_seed(seed: int, index: int) -> int:
    """The seed of item ``index`` of a run seeded with ``seed``: ``seed * 1000003 + index`` (mod
    2**63). Sample ``k`` of ``missingu sample`` and training step ``k`` draw from it, so neither
    depends on the batch it falls in."""
    return (seed * 1_000_003 + index) % (2**63)
