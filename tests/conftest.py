"""Shared fixtures: tiny configs that train and sample in seconds on a CPU."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

# The suite runs more threads than cores (two xdist workers, the jobs they start, the SLURM
# node's): OpenMP threads that spin while they wait for work then take the CPU from the ones with
# work (the smoke profile took 70 s instead of 28 beside two busy processes; 49 s with passive
# waiting). Inherited by every process the tests start, SLURM jobs included.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import yaml

from slurm_cluster import shared_cluster, stop_shared, unavailable

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


# One local SLURM cluster per test session (tests/slurm_cluster.py), shared by the pytest-xdist
# workers: its folder is chosen here, in the controller, before the workers start (they inherit
# the variable), the first worker that needs the cluster starts it, and the controller stops it.
CLUSTER_FOLDER = "MISSINGU_TEST_CLUSTER"
NODE_MEMORY_MB = 6000


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        os.environ[CLUSTER_FOLDER] = tempfile.mkdtemp(prefix="missingu-test-cluster-")


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and CLUSTER_FOLDER in os.environ:
        folder = Path(os.environ.pop(CLUSTER_FOLDER))
        stop_shared(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> dict:
    """The session's local SLURM cluster (skips where one cannot run)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no local SLURM cluster: {reason}")
    return shared_cluster(Path(os.environ[CLUSTER_FOLDER]), memory_mb=NODE_MEMORY_MB)
