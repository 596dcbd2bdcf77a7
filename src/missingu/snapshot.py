"""The inference snapshot a training run ends with (``ema.pt``): the EMA weights and the metadata
needed to rebuild the model (architecture, model config, dataset shape, diffusion, recipe).
Written by training, read by every stage that uses a trained model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from .io import InputFileError, load_torch, save_torch

EMA_FILE = "ema.pt"
SNAPSHOT_FORMAT = "missingu.ema/1"
# Model keys added after snapshots of this format were first written, per architecture, with the
# value the network of a snapshot without them computed (the slimmable U-Net's DDSM options).
ADDED_MODEL_KEYS = {"ddpm": {"init": "torch", "norm_groups": "scaled", "concat_slicing": "parts"}}


def save_snapshot(model: nn.Module, meta: Mapping[str, Any], step: int, path: str | Path) -> None:
    """Write the inference snapshot: weights plus the metadata needed to rebuild the model."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(
        {"format": SNAPSHOT_FORMAT, "step": step, "meta": dict(meta), "state_dict": state,
         "version": __version__},
        path,
    )


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Read an inference snapshot written by :func:`save_snapshot`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (train first: `missingu train`)")
    what = f"a missingu inference snapshot ({SNAPSHOT_FORMAT}: the {EMA_FILE} that `missingu train` writes)"
    blob = load_torch(path, what=what)
    if not isinstance(blob, dict) or blob.get("format") != SNAPSHOT_FORMAT:
        hint = f"; it is a training resume state: give the {EMA_FILE} beside it" if (
            isinstance(blob, dict) and "optimizer" in blob and "ema" in blob) else ""
        raise InputFileError(f"{path} is not {what}{hint}")
    meta = blob.get("meta", {})
    if isinstance(meta.get("model"), dict):  # an older snapshot: the keys it lacks, as it was computed
        meta["model"] = {**ADDED_MODEL_KEYS.get(meta.get("arch"), {}), **meta["model"]}
    return blob
