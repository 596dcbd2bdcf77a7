"""Training: exact resume after a hard kill, NaN detection, logs, EMA and config checks."""

from __future__ import annotations

import copy
import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from missingu.config import ConfigError
from missingu.diffusion import Diffusion, DiffusionConfig
from missingu.divergence import TrainingDiverged
from missingu.experiment import parse_experiment
from missingu.io import load_torch
from missingu.models import model_from_spec
from missingu.snapshot import load_snapshot
from missingu.train import EMA, TrainConfig, config_difference, learning_rate, train

N = 4  # checkpoint interval; full runs take 2N steps


def _setup(tiny_config: dict, arch: str = "cunet"):
    cfg = parse_experiment(tiny_config)
    torch.manual_seed(0)
    model = model_from_spec(cfg.model(arch), 1, 8)
    images = cfg.dataset().load("train").images
    return model, Diffusion(cfg.diffusion), images


def _state(path: Path) -> dict:
    return load_torch(path)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from conftest import TINY
    from test_train import _setup, N
    from missingu.train import TrainConfig, train
    model, diffusion, images = _setup(TINY)
    def die(step, loss):
        if step == N + 1:
            os.kill(os.getpid(), signal.SIGKILL)
    train(model, diffusion, images, TrainConfig(steps=2 * N, batch_size=8, lr=1e-3, warmup_steps=2 * N - 2,
          checkpoint_every=N, log_every=1), {out!r}, seed=3, meta={{"run": "x"}}, on_step=die, progress=False)
    """
)


def test_warmup_learning_rates():
    """DDSM's linear warm-up: step k (from 0) at lr x min(k, W) / W, then lr; none when W = 0."""
    cfg = TrainConfig(lr=4e-4, warmup_steps=5000)
    assert learning_rate(cfg, 0) == 0.0
    assert learning_rate(cfg, 1) == pytest.approx(4e-4 / 5000)
    assert learning_rate(cfg, 2500) == pytest.approx(2e-4)
    assert learning_rate(cfg, 5000) == pytest.approx(4e-4)
    assert learning_rate(cfg, 450_000) == pytest.approx(4e-4)
    assert learning_rate(TrainConfig(lr=4e-4), 0) == 4e-4
    with pytest.raises(ConfigError, match="warmup_steps: must be zero"):
        TrainConfig(warmup_steps=-1)


def test_resume_after_kill_is_exact(tmp_path, tiny_config):
    """Killed mid-way (and mid-warm-up), a resumed run ends with the unbroken run's weights."""
    torch.set_num_threads(1)
    tcfg = TrainConfig(steps=2 * N, batch_size=8, lr=1e-3, warmup_steps=2 * N - 2, checkpoint_every=N, log_every=1)
    model, diffusion, images = _setup(tiny_config)
    train(model, diffusion, images, tcfg, tmp_path / "whole", seed=3, meta={"run": "x"}, progress=False)

    killed = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(killed))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _state(killed / "resume.pt")["step"] == N
    assert not (killed / "ema.pt").exists()
    rows = list(csv.DictReader(open(killed / "loss.csv")))
    assert len(rows) == N + 1  # the row of step N+1 was logged before the kill

    model, diffusion, images = _setup(tiny_config)
    result = train(model, diffusion, images, tcfg, killed, seed=3, meta={"run": "x"}, progress=False)
    assert result.resumed_from == N
    whole, resumed = _state(tmp_path / "whole" / "resume.pt"), _state(killed / "resume.pt")
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs"
    assert whole["history"] == [
        {**row, "seconds": whole["history"][i]["seconds"]} for i, row in enumerate(resumed["history"])
    ]
    rows = list(csv.DictReader(open(killed / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 2 * N + 1))  # no duplicate rows
    assert [float(r["lr"]) for r in rows] == pytest.approx([learning_rate(tcfg, k) for k in range(2 * N)])


def test_resume_refuses_a_different_configuration(tmp_path, tiny_config):
    model, diffusion, images = _setup(tiny_config)
    tcfg = TrainConfig(steps=2, batch_size=4, checkpoint_every=2)
    train(model, diffusion, images, tcfg, tmp_path, meta={"model": {"channels": [16, 16]}}, progress=False)
    with pytest.raises(ConfigError, match=r"resume.pt was written by a different configuration \(model:"):
        train(model, diffusion, images, tcfg, tmp_path, meta={"model": {"channels": [32, 32]}}, progress=False)
    # more steps is not a different configuration: training continues
    more = TrainConfig(steps=3, batch_size=4, checkpoint_every=2)
    out = train(model, diffusion, images, more, tmp_path, meta={"model": {"channels": [16, 16]},
                                                                  "train": {"steps": 3}}, progress=False)
    assert out.step == 3 and out.resumed_from == 2
    # fewer steps than the checkpoint holds is: the run would silently be longer than asked
    with pytest.raises(ConfigError, match=r"\(train.steps: the checkpoint is at step 3, beyond the 2 asked now\)"):
        train(model, diffusion, images, tcfg, tmp_path, meta={"model": {"channels": [16, 16]}}, progress=False)


def test_restart_on_change_sets_the_old_state_aside(tmp_path, tiny_config, caplog):
    model, diffusion, images = _setup(tiny_config)
    tcfg = TrainConfig(steps=2, batch_size=4, checkpoint_every=1, log_every=1)
    old_meta, new_meta = {"train": {"lr": 1e-3}}, {"train": {"lr": 2e-3}}
    train(model, diffusion, images, tcfg, tmp_path, meta=old_meta, progress=False)
    old_state = _state(tmp_path / "resume.pt")
    with caplog.at_level("WARNING", logger="missingu.train"):
        out = train(model, diffusion, images, tcfg, tmp_path, meta=new_meta, progress=False,
                    on_config_change="restart")
    assert out.resumed_from == 0 and out.step == 2
    assert "different configuration (train: {'lr': 0.001} there, {'lr': 0.002} now); moved it to" in caplog.text
    kept = list((tmp_path / "superseded").glob("resume-*.pt"))
    assert len(kept) == 1 and _state(kept[0])["meta"] == old_state["meta"]
    assert _state(tmp_path / "resume.pt")["meta"] == new_meta
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "loss.csv"))] == [1, 2]
    # the same configuration again resumes (nothing to do), it does not restart
    again = train(model, diffusion, images, tcfg, tmp_path, meta=new_meta, progress=False, on_config_change="restart")
    assert again.resumed_from == 2 and len(list((tmp_path / "superseded").iterdir())) == 1


def test_checkpoint_interval_may_change_on_resume(tmp_path, tiny_config):
    model, diffusion, images = _setup(tiny_config)
    first = TrainConfig(steps=2, batch_size=4, checkpoint_every=2)
    train(model, diffusion, images, first, tmp_path, meta={"train": {"checkpoint_every": 2}}, progress=False)
    more = TrainConfig(steps=4, batch_size=4, checkpoint_every=1)
    out = train(model, diffusion, images, more, tmp_path, meta={"train": {"checkpoint_every": 1}}, progress=False)
    assert out.resumed_from == 2


def test_a_resume_state_is_read_onto_the_cpu_whatever_the_device(tmp_path, tiny_config, monkeypatch):
    """load_state_dict puts each tensor on its parameter's device; read onto the GPU, unfused
    AdamW's step counts would stay there and be read back to the host every step."""
    import missingu.train as train_module

    model, diffusion, images = _setup(tiny_config)
    train(model, diffusion, images, TrainConfig(steps=2, batch_size=4, checkpoint_every=2), tmp_path, progress=False)
    seen = []
    real = train_module.load_torch
    monkeypatch.setattr(train_module, "load_torch", lambda path, **kw: seen.append(kw) or real(path, **kw))
    out = train(model, diffusion, images, TrainConfig(steps=3, batch_size=4, checkpoint_every=2), tmp_path,
                progress=False)
    assert out.resumed_from == 2 and [kw["map_location"] for kw in seen] == ["cpu"]


def test_a_run_resumed_in_another_precision_says_so_and_goes_on(tmp_path, tiny_config, caplog):
    from missingu.io import save_torch

    model, diffusion, images = _setup(tiny_config)
    train(model, diffusion, images, TrainConfig(steps=2, batch_size=4, checkpoint_every=2), tmp_path, progress=False)
    state = _state(tmp_path / "resume.pt")
    assert state["precision"] == "fp32"  # amp applies on CUDA only
    with caplog.at_level("WARNING", logger="missingu.train"):
        train(model, diffusion, images, TrainConfig(steps=2, batch_size=4, checkpoint_every=2), tmp_path,
              progress=False)
    assert "was trained in" not in caplog.text  # the same precision: nothing to say
    save_torch({**state, "precision": "bf16"}, tmp_path / "resume.pt")  # as if trained on a GPU
    with caplog.at_level("WARNING", logger="missingu.train"):
        out = train(model, diffusion, images, TrainConfig(steps=3, batch_size=4, checkpoint_every=2), tmp_path,
                    progress=False)
    assert out.resumed_from == 2
    assert "was trained in bf16; it continues in fp32 on cpu" in caplog.text


def test_nan_loss_names_the_step(tmp_path, tiny_config):
    model, diffusion, images = _setup(tiny_config, "unet")
    tcfg = TrainConfig(steps=10, batch_size=4, checkpoint_every=2, log_every=1)

    def poison(step, loss):
        if step == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"became nan at step 4; .*checkpoint of step 2 in .*resume.pt"):
        train(model, diffusion, images, tcfg, tmp_path, on_step=poison, progress=False)
    assert _state(tmp_path / "resume.pt")["step"] == 2
    assert torch.isfinite(next(iter(_state(tmp_path / "resume.pt")["model"].values()))).all()


def test_loss_decreases_and_outputs_exist(tmp_path, tiny_config):
    model, diffusion, images = _setup(tiny_config, "unet")
    tcfg = TrainConfig(steps=60, batch_size=32, lr=2e-3, checkpoint_every=30, log_every=10, ema_decay=0.9)
    result = train(model, Diffusion(DiffusionConfig(timesteps=50)), images, tcfg, tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "loss.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert float(rows[-1]["loss"]) < 0.7 * float(rows[0]["loss"])
    snap = load_snapshot(result.snapshot)
    assert snap["step"] == 60 and set(snap["state_dict"]) == set(model.state_dict())


def test_ema_is_a_moving_average():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin, step=1000)  # warm-up over: decay 0.5
    assert ema.model.weight.item() == pytest.approx(0.5)
    ema.update(lin, step=0)  # warm-up: decay min(0.5, 1/10) = 0.1
    assert ema.model.weight.item() == pytest.approx(0.5 * 0.1 + 0.9)


def test_a_checkpoint_from_before_a_new_train_key_resumes():
    """A train key the checkpoint predates (warmup_steps) is no difference while at its default."""
    saved = {"train": {"lr": 1e-3, "steps": 4}}
    assert config_difference(saved, {"train": {"lr": 1e-3, "steps": 8, "warmup_steps": 0}}) is None
    assert "warmup_steps" in config_difference(saved, {"train": {"lr": 1e-3, "steps": 8, "warmup_steps": 5}})


def test_a_models_recipe_reaches_its_config_json_and_no_others(tmp_path, tiny_config):
    """A model entry's train keys are its recipe: in its run's config.json and checkpoint meta,
    not in another model's."""
    from missingu.cli import main

    tiny_config["train"].update(steps=2, checkpoint_every=2)
    tiny_config["models"][1]["train"] = {"lr": 5e-4, "warmup_steps": 3, "betas": [0.9, 0.999]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    records = {}
    for model in ("unet", "cunet"):
        out = tmp_path / model
        assert main(["train", "--config", str(path), "--model", model, "--out-dir", str(out), "--no-progress"]) == 0
        records[model] = json.loads((out / "config.json").read_text())
        assert load_snapshot(out / "ema.pt")["meta"]["train"] == records[model]["meta"]["train"]
    own, other = records["cunet"]["meta"]["train"], records["unet"]["meta"]["train"]
    assert (own["lr"], own["warmup_steps"], own["betas"]) == (5e-4, 3, [0.9, 0.999])
    assert (other["lr"], other["warmup_steps"], other["betas"]) == (1e-3, 0, [0.9, 0.99])
    rows = list(csv.DictReader(open(tmp_path / "cunet" / "loss.csv")))
    assert float(rows[-1]["lr"]) == pytest.approx(5e-4 / 3)  # step 1 of a 3-step warm-up


def _slim(tiny_config: dict, dropout: float = 0.0):
    """The slimmable DDPM U-Net (``tiny``: widths 1.0 and 0.5, so a sandwich of two passes)."""
    tiny_config["models"].append({"name": "slim", "arch": "ddpm", "preset": "tiny", "options": {"dropout": dropout}})
    return _setup(tiny_config, "slim")


def test_sandwich_noise_shared_or_per_width(tmp_path, tiny_config, monkeypatch):
    """The passes of a step share x0; ``per_width`` draws each narrower pass's t and noise afresh
    (DDSM), ``shared`` reuses the full width's; the full width's pass is the same in both."""
    calls = []

    def record(self, model, x0, t, noise):
        calls.append((model.width, x0.clone(), t.clone(), noise.clone()))
        return Diffusion.loss.__wrapped__(self, model, x0, t, noise)

    record.__wrapped__ = Diffusion.loss
    monkeypatch.setattr(Diffusion, "loss", record)
    seen = {}
    for mode in ("shared", "per_width"):
        calls.clear()
        model, diffusion, images = _slim(copy.deepcopy(tiny_config))
        train(model, diffusion, images, TrainConfig(steps=2, batch_size=4, sandwich_noise=mode), tmp_path / mode,
              progress=False)
        assert [c[0] for c in calls] == [1.0, 0.5, 1.0, 0.5]
        seen[mode] = calls[:]
    for mode, same in (("shared", True), ("per_width", False)):
        for full, narrow in (seen[mode][0:2], seen[mode][2:4]):
            assert torch.equal(full[1], narrow[1])  # one batch
            assert torch.equal(full[2], narrow[2]) is same and torch.equal(full[3], narrow[3]) is same
    for a, b in zip(seen["shared"][0::2], seen["per_width"][0::2]):
        assert all(torch.equal(x, y) for x, y in zip(a[1:], b[1:]))
    with pytest.raises(ConfigError, match=r"sandwich_noise: unknown sandwich noise 'fresh'; allowed: per_width, shared"):
        TrainConfig(sandwich_noise="fresh")


def test_per_width_noise_and_dropout_resume_exactly(tmp_path, tiny_config):
    """Stopped at a checkpoint and continued, a slimmable run with dropout and per-width noise ends
    with the unbroken run's weights: every draw is a function of (seed, step)."""
    tcfg = TrainConfig(steps=2 * N, batch_size=4, checkpoint_every=N, sandwich_noise="per_width")
    train(*_slim(copy.deepcopy(tiny_config), 0.1), tcfg, tmp_path / "whole", seed=5, progress=False)
    half = TrainConfig(steps=N, batch_size=4, checkpoint_every=N, sandwich_noise="per_width")
    train(*_slim(copy.deepcopy(tiny_config), 0.1), half, tmp_path / "parts", seed=5, progress=False)
    out = train(*_slim(copy.deepcopy(tiny_config), 0.1), tcfg, tmp_path / "parts", seed=5, progress=False)
    assert out.resumed_from == N
    whole, parts = _state(tmp_path / "whole" / "resume.pt"), _state(tmp_path / "parts" / "resume.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(t, parts[key][name]) for name, t in whole[key].items()), key


@pytest.mark.parametrize("inject", ["loss", "grad", None])
def test_a_non_finite_narrow_pass_is_never_applied_or_saved(tmp_path, tiny_config, inject):
    """NaN at width 0.5 only, in the 4th step (checkpoints every 2): in the loss (a forward hook) or
    only in the gradient (a hook on a weight's gradient). The step stops before the optimizer
    applies it; resume.pt stays the step-2 file byte for byte, no ema.pt. Without injection the
    same run finishes."""
    model, diffusion, images = _slim(tiny_config)
    armed, before = [], {}
    nan = float("nan")
    model.register_forward_hook(lambda m, args, out: out * nan if armed and inject == "loss" and m.width == 0.5
                                else None)
    weight = next(model.parameters())
    weight.register_hook(lambda g: torch.full_like(g, nan) if armed and inject == "grad" and model.width == 0.5
                         else None)

    def arm(step, loss):
        if step == 3:
            armed.append(True)
            before["bytes"] = (tmp_path / "resume.pt").read_bytes()

    tcfg = TrainConfig(steps=6, batch_size=4, checkpoint_every=2, log_every=1)
    if inject is None:
        train(model, diffusion, images, tcfg, tmp_path, on_step=arm, progress=False)
        assert (tmp_path / "ema.pt").exists() and _state(tmp_path / "resume.pt")["step"] == 6
        return
    what = {"loss": "training loss became nan", "grad": "the gradient norm became nan with a finite loss"}[inject]
    with pytest.raises(TrainingDiverged, match=rf"^{what} at step 4 \(width 0.5\); stopped without applying or "
                                               rf"saving the step \(the checkpoint of step 2 in .*resume.pt is intact\)"):
        train(model, diffusion, images, tcfg, tmp_path, on_step=arm, progress=False)
    assert (tmp_path / "resume.pt").read_bytes() == before["bytes"]
    assert not (tmp_path / "ema.pt").exists()
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the step was not applied
