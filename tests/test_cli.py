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
from missingu.measure import count_parameters
from missingu.models import model_from_spec


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


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def trained_unet(tmp_path_factory):
    """A tiny U-Net trained by the CLI: its run folder and the prepared data."""
    import copy

    from conftest import TINY

    tmp = tmp_path_factory.mktemp("trained")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(copy.deepcopy(TINY)))
    data = tmp / "data.pt"
    assert main(["prepare-data", "--config", str(cfg), "--out", str(data)]) == 0
    run = tmp / "run"
    assert main(["train", "--config", str(cfg), "--model", "unet", "--data", str(data), "--out-dir", str(run),
                 "--no-progress", "--threads", "1"]) == 0
    return cfg, run, data


@pytest.mark.parametrize("flag", ["--checkpoint", "--data"])
@pytest.mark.parametrize("kind", ["text", "truncated", "other"])
def test_corrupt_or_wrong_kind_input_files(tmp_path, trained_unet, capsys, flag, kind):
    cfg, run, data = trained_unet
    bad = tmp_path / "bad.pt"
    if kind == "text":
        bad.write_text("step,loss\n1,0.5\n")
    elif kind == "truncated":
        blob = (run / "ema.pt").read_bytes()
        bad.write_bytes(blob[: len(blob) // 2])
    else:  # a real torch file of the other kind: data given as a checkpoint and vice versa
        bad = data if flag == "--checkpoint" else run / "ema.pt"
    if flag == "--checkpoint":
        args = ["sample", "--config", str(cfg), "--checkpoint", str(bad), "--sampler", "ddim",
                "--out", str(tmp_path / "s.pt")]
        expected = "is not a missingu inference snapshot"
    else:
        args = ["train", "--config", str(cfg), "--model", "unet", "--data", str(bad), "--out-dir", str(tmp_path / "r")]
        expected = "is not a prepared dataset"
    assert main(args) == 1
    err = _one_line_error(capsys)
    assert f"{bad} {expected}" in err


def test_resume_state_given_as_checkpoint_says_which_file_to_use(tmp_path, trained_unet, capsys):
    cfg, run, _ = trained_unet
    assert main(["sample", "--config", str(cfg), "--checkpoint", str(run / "resume.pt"), "--sampler", "ddim",
                 "--out", str(tmp_path / "s.pt")]) == 1
    assert "it is a training resume state: give the ema.pt beside it" in _one_line_error(capsys)


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_threads_must_be_positive(tiny_config_file, capsys, threads):
    assert main(["info", "--config", str(tiny_config_file), "--threads", threads]) == 2
    assert f"--threads must be positive, got {threads}" in _one_line_error(capsys)


def test_profile_refuses_a_checkpoint_of_another_architecture(tmp_path, trained_unet, capsys):
    cfg, run, _ = trained_unet
    out = tmp_path / "p.csv"
    assert main(["profile", "--config", str(cfg), "--out", str(out), "--checkpoint", f"digits/cunet={run / 'ema.pt'}"]) == 1
    err = _one_line_error(capsys)
    assert f"--checkpoint digits/cunet={run / 'ema.pt'}: its arch is 'unet'; the config's model 'cunet'" in err
    assert not out.exists()


def test_restart_on_change_by_hand(tmp_path, trained_unet, capsys):
    cfg, run, data = trained_unet
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = ["train", "--config", str(cfg), "--model", "unet", "--data", str(data), "--out-dir", str(copy),
            "--no-progress", "--set", "train.lr=0.002"]
    assert main(args) == 1
    assert "--restart-on-change moves it to superseded/" in capsys.readouterr().err
    assert main([*args, "--restart-on-change"]) == 0
    assert json.loads((copy / "config.json").read_text())["config"]["train"]["lr"] == 0.002
    assert len(list((copy / "superseded").glob("resume-*.pt"))) == 1


def test_training_twice_gives_identical_weights(tmp_path, trained_unet):
    # the initial weights come from the seed too: two runs of one config are bit-identical
    cfg, run, data = trained_unet
    again = tmp_path / "again"
    assert main(["train", "--config", str(cfg), "--model", "unet", "--data", str(data), "--out-dir", str(again),
                 "--no-progress", "--threads", "1"]) == 0
    first, second = (torch.load(d / "ema.pt", weights_only=True)["state_dict"] for d in (run, again))
    assert all(torch.equal(first[k], second[k]) for k in first)
