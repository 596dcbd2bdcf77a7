"""Shared fixtures: tiny configs that train and sample in seconds on a CPU."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

TINY = {
    "seed": 0,
    "device": "cpu",
    "diffusion": {"schedule": "linear", "timesteps": 50},
    "datasets": [{"name": "digits", "image_size": 8, "max_images": 256}],
    "models": [
        {"name": "unet", "arch": "unet", "preset": "tiny"},
        {"name": "cunet", "arch": "cunet", "preset": "tiny"},
    ],
    "train": {"steps": 6, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 3, "log_every": 2},
    "samplers": [
        {"name": "ddpm", "kind": "ddpm"},
        {"name": "ddim", "kind": "ddim", "steps": 5},
        {"name": "pf_ode", "kind": "pf_ode", "method": "rk4", "steps": 3},
    ],
    "sample": {"num_samples": 4, "batch_size": 4},
}


@pytest.fixture
def tiny_config() -> dict:
    """A fresh copy of the tiny experiment config as plain data."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_config: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


# The two longest files first: pytest-xdist (--dist loadfile) hands files to its workers in
# collection order, so the SLURM cluster's tests and the smoke run start at once, each on its own
# worker, and the other files run beside them (alphabetically, the SLURM file came near the end).
FIRST = ("test_slurm.py", "test_pipeline.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
