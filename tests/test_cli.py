"""The missingu command line: train, sample, info, prepare-data, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from missingu.cli import main
from missingu.experiment import parse_experiment
from missingu.models import model_from_spec
from missingu.profiling import count_parameters


def test_info_prints_measured_parameters(tiny_config_file, capsys):
    assert main(["info", "--config", str(tiny_config_file)]) == 0
    out = capsys.readouterr().out
    cfg = parse_experiment(yaml.safe_load(tiny_config_file.read_text()))
    for spec in cfg.models:
        n = count_parameters(model_from_spec(spec, 1, 8))
        line = next(row for row in out.splitlines() if row.startswith(spec.name + " "))
        assert f"{n:,}" in line
    assert "GFLOPs/call" in out and "ODE evals/call" in out


@pytest.mark.parametrize("model", ["unet", "cunet"])
def test_prepare_train_sample(tmp_path, tiny_config_file, model):
    cfg = str(tiny_config_file)
    data = tmp_path / "data.pt"
    assert main(["prepare-data", "--config", cfg, "--out", str(data)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--config", cfg, "--model", model, "--data", str(data), "--out-dir", str(run),
                 "--no-progress", "--threads", "1"]) == 0
    for name in ("ema.pt", "resume.pt", "loss.csv", "config.json"):
        assert (run / name).stat().st_size > 0
    assert json.loads((run / "config.json").read_text())["meta"]["model_name"] == model
    for sampler in ("ddpm", "ddim", "pf_ode"):
        out = tmp_path / f"{sampler}.pt"
        assert main(["sample", "--config", cfg, "--checkpoint", str(run / "ema.pt"), "--sampler", sampler,
                     "--out", str(out), "--grid", str(tmp_path / f"{sampler}.png"), "--num-samples", "5",
                     "--batch-size", "3", "--no-progress"]) == 0
        images = torch.load(out, weights_only=True)["images"]
        assert images.shape == (5, 1, 8, 8) and torch.isfinite(images).all()
        summary = json.loads(out.with_suffix(".json").read_text())
        assert summary["network_calls_per_batch"] == {"ddpm": 50, "ddim": 5, "pf_ode": 13}[sampler]
        assert Image.open(tmp_path / f"{sampler}.png").size[0] > 8


def test_bad_config_fails_before_work(tmp_path, tiny_config, capsys):
    tiny_config["models"][1]["options"] = {"solver": "rk45"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    out_dir = tmp_path / "never"
    assert main(["train", "--config", str(path), "--model", "unet", "--out-dir", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert "models[1].options.solver: unknown ODE solver 'rk45'; allowed: dopri5, euler, midpoint, rk4" in err
    assert not out_dir.exists()


def test_bad_override_and_missing_files(tmp_path, tiny_config_file, capsys):
    cfg = str(tiny_config_file)
    assert main(["train", "--config", cfg, "--model", "unet", "--out-dir", str(tmp_path),
                 "--set", "train.steps=0"]) == 1
    assert "train.steps: must be positive, got 0" in capsys.readouterr().err
    assert main(["sample", "--config", cfg, "--checkpoint", str(tmp_path / "nope.pt"), "--sampler", "ddim",
                 "--out", str(tmp_path / "s.pt")]) == 1
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert main(["info", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml does not exist" in capsys.readouterr().err
    assert main(["sample", "--config", cfg, "--checkpoint", "x", "--out", "y", "--num-samples", "0"]) == 2


def test_console_script_installed():
    exe = shutil.which("missingu", path=str(Path(sys.executable).parent))
    assert exe, "the missingu console script is not installed beside this Python"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("prepare-data", "train", "sample", "info"):
        assert command in out


def test_refused_resume_leaves_the_run_record_alone(tmp_path, tiny_config_file, capsys):
    cfg = str(tiny_config_file)
    run = tmp_path / "run"
    assert main(["train", "--config", cfg, "--model", "unet", "--out-dir", str(run), "--no-progress"]) == 0
    before = (run / "config.json").read_text()
    assert main(["train", "--config", cfg, "--model", "unet", "--out-dir", str(run), "--no-progress",
                 "--set", "train.lr=0.5"]) == 1
    assert "was written by a different configuration (train:" in capsys.readouterr().err
    assert (run / "config.json").read_text() == before
