"""Pretrained weights the metrics need, staged in a torch home folder.

Torch keeps downloaded checkpoints in ``<torch_home>/hub/checkpoints/<file>`` (``torch.hub.get_dir()``
is ``$TORCH_HOME/hub`` unless ``torch.hub.set_dir`` overrides it; torchvision's and torch-fidelity's
loaders both read that folder). The pipeline sets ``TORCH_HOME`` to :data:`DEFAULT_TORCH_HOME`, so
staging a file there once (by :func:`fetch_weights` on a machine with internet, or by copying it in)
makes every later run offline. A metric whose file is missing is reported as
``not computed: stage <file> in <dir>`` (:func:`stage_hint`), never guessed.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TORCH_HOME = Path("resources/torch_home")


@dataclass(frozen=True)
class WeightFile:
    """One checkpoint: registry ``name``, ``file`` name in the checkpoints folder, download ``url``,
    what ``used_by`` it and whether its name's hash suffix is checked on download (``check_hash``)."""

    name: str
    file: str
    url: str
    used_by: str
    check_hash: bool

    @property
    def hash_prefix(self) -> str | None:
        """Torch's convention: ``<stem>-<first 8+ hex digits of the file's sha256>.<ext>``; ``None``
        when not checked."""
        match = re.fullmatch(r".*-([0-9a-f]{8,})", Path(self.file).stem)
        return match.group(1) if self.check_hash and match else None


# URLs as torchvision (models/alexnet.py, AlexNet_Weights.IMAGENET1K_V1) and torch-fidelity
# (feature_extractor_inceptionv3.py, URL_INCEPTION_V3) load them. torchvision loads AlexNet with
# check_hash=True, so its suffix is a sha256 prefix; torch-fidelity never checks its suffix (the same
# suffix names pytorch-fid's different Inception file), so it is not treated as one.
WEIGHTS: dict[str, WeightFile] = {
    "lpips_alex": WeightFile(
        name="lpips_alex",
        file="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        used_by="LPIPS (AlexNet backbone, ImageNet weights; the linear heads ship in the lpips wheel)",
        check_hash=True,
    ),
    "inception": WeightFile(
        name="inception",
        file="weights-inception-2015-12-05-6726825d.pth",
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        used_by="FID / Inception Score (torch-fidelity's port of the TF Inception-v3 2015-12-05 graph)",
        check_hash=False,
    ),
}


class WeightsUnavailable(RuntimeError):
    """A metric's weight file is not staged. ``str(err)`` is one line,
    ``not computed: stage <file> in <dir>`` (``dir`` absolute), fit for a table cell; ``hint`` holds
    that text also in subclasses that add detail."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = message if hint is None else hint


class WeightsDownloadError(WeightsUnavailable):
    """:func:`fetch_weights` could not download a file; the message adds the URL and the reason."""


def _entry(name: str) -> WeightFile:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"unknown weights {name!r}; allowed: {', '.join(sorted(WEIGHTS))}") from None


def checkpoints_dir(torch_home: str | Path = DEFAULT_TORCH_HOME) -> Path:
    """``<torch_home>/hub/checkpoints`` as an absolute, normalised path."""
    return Path(os.path.abspath(Path(torch_home).expanduser() / "hub" / "checkpoints"))


def weight_path(name: str, torch_home: str | Path = DEFAULT_TORCH_HOME) -> Path:
    """Where the file of registry entry ``name`` is staged (it may not exist)."""
    return checkpoints_dir(torch_home) / _entry(name).file


def missing_weights(names: Iterable[str], torch_home: str | Path = DEFAULT_TORCH_HOME) -> list[str]:
    """The entries of ``names`` whose files are not staged, in the given order."""
    return [name for name in names if not weight_path(name, torch_home).is_file()]


def stage_hint(name: str, torch_home: str | Path = DEFAULT_TORCH_HOME) -> str:
    """``not computed: stage <file> in <dir>``: the one-line text a report shows for a missing file."""
    return f"not computed: stage {_entry(name).file} in {checkpoints_dir(torch_home)}"


def require_weights(name: str, torch_home: str | Path = DEFAULT_TORCH_HOME) -> Path:
    """The staged file of ``name``; raise :class:`WeightsUnavailable` (the stage hint) if missing."""
    path = weight_path(name, torch_home)
    if not path.is_file():
        raise WeightsUnavailable(stage_hint(name, torch_home))
    return path


def fetch_weights(
    names: Iterable[str], torch_home: str | Path = DEFAULT_TORCH_HOME, progress: bool = True
) -> list[Path]:
    """Download the files of ``names`` that are not staged yet; return the paths of all of them.

    Files already present are left alone. Each download goes to a temporary file beside the target
    and is renamed into place only when complete (and, for entries with ``check_hash``, only when its
    sha256 starts with the name's hash suffix; a mismatch raises torch's ``RuntimeError``). Without
    network the ``URLError``/``OSError`` becomes :class:`WeightsDownloadError`, one line naming the URL
    and where to put the file by hand.
    """
    names = list(names)
    for name in names:
        _entry(name)  # unknown names fail before any download
    paths = []
    for name in names:
        entry, path = WEIGHTS[name], weight_path(name, torch_home)
        if not path.is_file():
            _download(entry, path, torch_home, progress)
        paths.append(path)
    return paths


def _download(entry: WeightFile, path: Path, torch_home: str | Path, progress: bool) -> None:
    import torch.hub  # here: the Snakefile reads this module's paths without importing torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            torch.hub.download_url_to_file(entry.url, tmp, hash_prefix=entry.hash_prefix, progress=progress)
        except (urllib.error.URLError, OSError) as err:  # URLError is an OSError; named for the reader
            hint = stage_hint(entry.name, torch_home)
            raise WeightsDownloadError(
                f"{hint} (download from {entry.url} failed: {_reason(err)})", hint=hint
            ) from None
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _reason(err: OSError) -> str:
    """Why a download failed, on one line."""
    if isinstance(err, urllib.error.HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, urllib.error.URLError):
        text = str(err.reason)
    else:
        text = str(err)
    return " ".join(text.split())
