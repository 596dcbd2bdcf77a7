"""Data-parallel training: `train.gpus: 2` runs two gloo processes on the CPU (torchrun) that take
the same steps as one process with the whole global batch (dropout included: each process applies
its slice of the global batch's masks), and resume after a kill."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY
from missingu import distributed
from missingu.cli import main
from missingu.config import ConfigError
from missingu.train import TrainConfig

# gloo sums the two halves' gradients in another order than one process sums the whole batch,
# and thread counts change the order of reductions: float32 rounding (1.2e-7 after 6 steps with
# one thread per process, 1.1e-5 with two, measured). Adam divides by the root of the squared
# gradients, which can turn such rounding on a near-zero gradient into an update of up to lr
# (1e-3) over a few steps; a wrong slice of the batch moves every weight by that much. A tenth
# of lr tells the two apart; the losses, summed over the batch, must agree much more closely.
TOLERANCE = 1e-4
STEPS = 6


def _config(tmp_path: Path, name: str, **train) -> Path:
    cfg = copy.deepcopy(TINY)
    cfg["models"].append({"name": "slim", "arch": "ddpm", "preset": "tiny", "options": {"dropout": 0.1}})
    cfg["train"].update({"batch_size": 8, "checkpoint_every": 3, "log_every": 1, **train})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "ema.pt", weights_only=True)["state_dict"]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _train(config: Path, out: Path, *extra: str, model: str = "unet") -> list[str]:
    return ["train", "--config", str(config), "--model", model, "--out-dir", str(out), "--no-progress",
            "--threads", "2", *extra]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """One process, the whole global batch of 8."""
    tmp = tmp_path_factory.mktemp("single")
    config = _config(tmp, "one", steps=STEPS)
    assert main(_train(config, tmp / "run")) == 0
    return tmp / "run"


def test_two_gloo_processes_take_the_steps_of_one(tmp_path, single_process):
    config = _config(tmp_path, "two", steps=STEPS, gpus=2)
    assert main(_train(config, tmp_path / "run")) == 0
    assert _max_difference(_weights(single_process), _weights(tmp_path / "run")) < TOLERANCE
    one, two = ([row.split(",") for row in (run / "loss.csv").read_text().splitlines()[1:]]
                for run in (single_process, tmp_path / "run"))
    assert [r[0] for r in one] == [r[0] for r in two] == [str(k) for k in range(1, STEPS + 1)]  # rank 0's rows
    assert all(abs(float(a[1]) - float(b[1])) < 1e-5 * float(a[1]) for a, b in zip(one, two))
    assert len(list((tmp_path / "run").iterdir())) == len(list(single_process.iterdir()))


def test_with_dropout_two_processes_take_the_steps_of_one(tmp_path):
    """A slimmable network with dropout 0.1 and per-width sandwich noise: two gloo processes end
    where one process does (1.1e-5 apart, measured). With every process drawing the same masks
    (sample j of each half sharing one mask) they ended 9.9e-3 apart, a hundred times the tolerance."""
    runs = {}
    for gpus in (1, 2):
        config = _config(tmp_path, f"slim{gpus}", steps=STEPS, gpus=gpus, sandwich_noise="per_width")
        assert main(_train(config, tmp_path / f"run{gpus}", model="slim")) == 0
        runs[gpus] = _weights(tmp_path / f"run{gpus}")
    assert _max_difference(runs[1], runs[2]) < TOLERANCE


@pytest.mark.parametrize("rank", [0, 1])
def test_each_process_drops_its_slice_of_the_global_batchs_mask(monkeypatch, rank):
    """Process r of 2 applies rows r n ... (r + 1) n of the mask one process draws for all 2 n
    samples: the two processes' masks differ, and together they are the one process's."""
    def dropped(world: tuple[int, int], batch: int) -> torch.Tensor:
        monkeypatch.setattr(distributed, "world", lambda: world)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Dropout(0.1), torch.nn.Dropout(0.0))
        assert distributed.slice_dropout(net) == 1 and type(net[2]) is torch.nn.Dropout  # p = 0 stays
        torch.manual_seed(7)  # the step's seed, the same in every process
        return net[1](torch.ones(batch, 3, 4, 4))

    one, mine, other = dropped((1, 0), 8), dropped((2, rank), 4), dropped((2, 1 - rank), 4)
    assert torch.equal(mine, one[rank * 4:(rank + 1) * 4])
    assert not torch.equal(mine, other)
    assert one.unique().tolist() == pytest.approx([0.0, 1 / 0.9]) and 0.03 < (one == 0).float().mean() < 0.2


def test_killed_distributed_training_resumes_exactly(tmp_path):
    steps = 80  # long enough for the kill to land mid-run
    config = _config(tmp_path, "two", steps=steps, gpus=2, checkpoint_every=5)
    whole = tmp_path / "whole"
    assert main(_train(config, whole)) == 0
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "missingu.cli", *_train(config, run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "resume.pt").exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, without clean-up
    proc.wait(timeout=60)
    assert (run / "resume.pt").exists(), "training never wrote a checkpoint"
    assert not (run / "ema.pt").exists(), "training finished before the kill"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr and "from step 0 " not in done.stderr
    # the same processes and the same steps as the unbroken run: bit-identical weights
    assert _max_difference(_weights(whole), _weights(run)) == 0


def test_batch_must_split_over_the_processes():
    with pytest.raises(ConfigError, match=r"batch_size: 9 does not split evenly over gpus \(2\)"):
        TrainConfig(batch_size=9, gpus=2)
