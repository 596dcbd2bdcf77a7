"""Files: atomic output (everything is written to a temporary file beside the target, then renamed),
torch files loaded without code, JSON, image grids and CSV rows."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file in ``path``'s folder; on success rename it to ``path``.

    A crash mid-write leaves the previous ``path`` (or none) intact, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(binary_file)`` and move the result to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically."""
    import torch  # here, not above: reading configs and rows (the Snakefile's parse) needs no torch

    atomic_write(path, lambda fh: torch.save(obj, fh))


class InputFileError(ValueError):
    """A file given as input is missing, corrupt or of the wrong kind; the message names the
    file and what was expected."""


def load_torch(path: str | Path, map_location: str | torch.device = "cpu", what: str = "a torch file") -> Any:
    """``torch.load`` with ``weights_only=True``: plain data and tensors only, no code.

    A missing file, a file that ``torch.save`` did not write (text, truncated) or one holding
    other objects raises :class:`InputFileError` naming ``path`` and ``what`` was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path} does not exist; expected {what}")
    if not zipfile.is_zipfile(path):
        raise InputFileError(f"{path} is not {what}: torch.save did not write it (another kind of file, or cut short)")
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise InputFileError(f"{path} is not {what}: it holds more than tensors and plain data ({first})") from None
    except RuntimeError as err:
        if "PytorchStreamReader" not in str(err):  # torch's archive reader; anything else is not ours to name
            raise
        raise InputFileError(f"{path} is not {what}: {str(err).splitlines()[0]}") from None


def save_json(obj: Any, path: str | Path) -> None:
    """Write pretty JSON atomically."""
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write YAML atomically (block style for mappings, short lists inline)."""
    import yaml

    text = yaml.safe_dump(obj, default_flow_style=None, width=120)
    with atomic_open(path, "w") as fh:
        fh.write(text)


def save_file(obj: Any, path: str | Path) -> None:
    """Write ``obj`` by ``path``'s suffix: ``.json`` JSON, ``.yaml``/``.yml`` YAML, else ``torch.save``."""
    suffix = Path(path).suffix
    if suffix == ".json":
        save_json(obj, path)
    elif suffix in (".yaml", ".yml"):
        save_yaml(obj, path)
    else:
        save_torch(obj, path)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> None:
    """Save images in ``[-1, 1]`` (N, C, H, W) as one PNG grid, atomically."""
    from torchvision.utils import save_image

    n = images.shape[0]
    nrow = nrow or max(1, math.ceil(n**0.5))
    grid_input = (images.float().clamp(-1, 1) + 1) / 2
    atomic_write(path, lambda fh: save_image(grid_input, fh, nrow=nrow, padding=1, format="png"))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV as written by :func:`write_rows` (values kept as text, blanks dropped)."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def write_rows(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write rows as CSV (atomic); columns in first-seen order, blanks where a row has none."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_open(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def sidecars(out: str | Path, suffixes: Mapping[str, str]) -> dict[str, Path]:
    """The files a command writes beside its main output ``out``: ``{name: out with its suffix
    replaced by suffixes[name]}`` (``denoise.csv`` and ``.curves.csv`` -> ``denoise.curves.csv``).
    Each stage states its ``SIDECARS`` once; its command's defaults and its rule's outputs use them."""
    out = Path(out)
    return {name: out.with_suffix(suffix) for name, suffix in suffixes.items()}
