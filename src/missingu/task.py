"""What every stage task shares: the :class:`Result` its ``run(...)`` returns, the :class:`Work`
its ``work(...)`` estimates, and :func:`write_result`, which writes a result to the files a
command was given.

A stage module (``profile``, ``bench``, ``denoise``, ``evaluate``, ``stepaware``) exposes a config
dataclass, ``run(...) -> Result`` and ``work(...) -> Work``. Its command reads the inputs, calls
``run`` and writes the result; the pipeline sizes the job's runtime from ``work`` (SLURM, see
``workflow/rules/resources.smk``), so no estimate restates what the library does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import save_file, save_json, write_rows


@dataclass
class Result:
    """What a task measured: ``rows`` (its main table), ``record`` (what ran, on what, how long:
    the JSON written beside), further ``tables`` and ``files`` (objects written by their path's
    suffix, :func:`~missingu.io.save_file`) by sidecar name."""

    rows: list[dict[str, Any]]
    record: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)


def write_result(result: Result, paths: Mapping[str, str | Path]) -> None:
    """Write ``result`` atomically: its rows to ``paths["rows"]`` (CSV), each table and file to the
    path of its name, its record to ``paths["record"]`` (JSON); a part without a path is not written."""
    if "rows" in paths:
        write_rows(result.rows, paths["rows"])
    for name, rows in result.tables.items():
        write_rows(rows, paths[name])
    for name, obj in result.files.items():
        save_file(obj, paths[name])
    if "record" in paths:
        save_json(result.record, paths["record"])


@dataclass(frozen=True)
class Work:
    """How much a job computes, for its runtime estimate: image values (C x H x W summed over images)
    through training steps (forward, backward, update) and through forward calls alone, and the
    number of timed measurements whose cost is fixed rather than proportional (a profile row with
    its sampling and memory measurements, a benchmark variant with its compilation)."""

    train_values: float = 0.0
    forward_values: float = 0.0
    measurements: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(self.train_values + other.train_values, self.forward_values + other.forward_values,
                    self.measurements + other.measurements)


def failure_status(err: BaseException) -> str:
    """A row's ``status`` for a measurement ``err`` stopped: ``failed: <type>: <first line>``."""
    return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"


def image_values(shape: tuple[int, ...] | list[int]) -> int:
    """C x H x W of one image."""
    c, h, w = shape
    return int(c) * int(h) * int(w)


def format_shape(shape: Sequence[int]) -> str:
    """``(3, 64, 64)`` -> ``"3x64x64"``, as shapes appear in profile rows."""
    return "x".join(map(str, shape))
