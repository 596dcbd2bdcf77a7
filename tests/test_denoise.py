"""The denoising task: the sigma -> t* mapping, both protocols on a Gaussian toy model whose exact
denoiser is known (with a do-nothing denoiser as the negative control), and the CLI's outputs
when the LPIPS weights are not staged."""

from __future__ import annotations

import csv
import json
import math
import urllib.error

import pytest
import torch
import yaml

from missingu.cli import main
from missingu.config import ConfigError
from missingu.denoise import DenoiseConfig, Scorer, matched_step, reverse_chain, run_denoising, summary_rows
from missingu.diffusion import Diffusion, DiffusionConfig
from missingu.experiment import parse_experiment
from pipeline_run import ROOT

S = 0.25  # std of the toy data on the model's [-1, 1] scale


def gaussian_denoiser(diffusion: Diffusion, s: float = S):
    """The exact eps-predictor for data x0 ~ N(0, s^2 I): E[eps | x_t] = sqrt(1-ab) x_t / (ab s^2 + 1 - ab)."""

    def model(x, t):
        ab = diffusion.alpha_bar[t].reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x / (ab * s * s + 1 - ab)

    return model


def toy_images(n=64, size=12, seed=0):
    x = S * torch.randn((n, 1, size, size), generator=torch.Generator().manual_seed(seed))
    return ((x + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
def test_matched_step_is_where_alpha_bar_is_one_over_one_plus_four_sigma_squared(schedule, sigma):
    d = Diffusion(DiffusionConfig(schedule=schedule, timesteps=1000))
    t = matched_step(d.config, sigma)
    ab = d.log_alpha_bar64.exp()
    target = 1 / (1 + 4 * sigma**2)
    gaps = (ab - target).abs()
    assert gaps[t] == gaps.min()
    assert all(gaps[t] <= gaps[u] for u in (max(t - 1, 0), min(t + 1, 999)))
    # the forward process's noise at t*, on the [0, 1] scale, is sigma (up to one step of the grid)
    level = lambda u: math.sqrt((1 - ab[u].item()) / ab[u].item()) / 2  # noqa: E731
    assert level(max(t - 1, 0)) <= sigma * 1.0001 or t == 0
    assert min(level(t), level(min(t + 1, 999))) <= sigma * 1.05 and level(min(t + 1, 999)) >= sigma * 0.95


def test_the_exact_denoiser_of_a_gaussian_improves_psnr_and_doing_nothing_does_not():
    d = Diffusion(DiffusionConfig(timesteps=1000))
    clean = toy_images()
    config = DenoiseConfig(sigmas=(0.1, 0.2), num_images=64, batch_size=64, lpips=False, examples=2)
    scorer = Scorer(12, None, "not computed: denoise.lpips is false")
    # deterministic updates; the ancestral one ends at a posterior *sample*, whose squared error for
    # this Gaussian is twice the posterior variance: 2 (s^2 4sigma^2 / (s^2 + 4sigma^2)) > 4sigma^2 here
    for reverse in ("posterior_mean", "ddim"):
        curves, examples = run_denoising(gaussian_denoiser(d), d, clean, DenoiseConfig(**{
            **config.__dict__, "reverse": reverse}), scorer, seed=3)
        for c in curves:
            noisy, final = c.values["psnr"][0].mean(), c.values["psnr"][c.reported_step()].mean()
            assert final > noisy + 1.0, (reverse, c.protocol, c.sigma, float(noisy), float(final))
            assert c.values["lpips"] is None
        assert examples[0.2]["denoised"].shape == (2, 1, 12, 12)
    # negative control: predicting eps = 0 leaves x_t / sqrt(ab) unchanged at every step
    identity = lambda x, t: torch.zeros_like(x)  # noqa: E731
    curves, _ = run_denoising(identity, d, clean, config, scorer, seed=3)
    for c in curves:
        assert c.values["psnr"][c.reported_step()].mean() <= c.values["psnr"][0].mean() + 0.05


def test_protocols_start_where_they_should_and_sweep_reports_its_best_step():
    d = Diffusion(DiffusionConfig(timesteps=200))
    clean = toy_images(8)
    sigmas = (0.05, 0.2)
    config = DenoiseConfig(sigmas=sigmas, num_images=8, batch_size=3, lpips=False, examples=2)
    curves, _ = run_denoising(gaussian_denoiser(d), d, clean, config, Scorer(12, None, "off"), seed=0)
    by = {(c.protocol, c.sigma): c for c in curves}
    starts = [matched_step(d.config, s) for s in sigmas]
    for s, t in zip(sigmas, starts):
        assert by["matched", s].t_start == t and by["matched", s].steps == t + 1
        assert by["sweep", s].t_start == max(starts) and by["sweep", s].steps == max(starts) + 1
        mean = by["sweep", s].values["psnr"].mean(dim=1)
        assert by["sweep", s].reported_step() == int(mean.argmax())
        assert by["matched", s].values["psnr"].shape == (t + 2, 8)  # batches of 3 joined in order
    rows = summary_rows(curves, {"psnr": None, "ssim": None, "lpips": "off"}, model="toy")
    assert [r["protocol"] for r in rows] == ["matched", "matched", "sweep", "sweep"]
    assert all(r["lpips"] == "off" and r["model"] == "toy" for r in rows)


def test_noise_is_the_same_for_every_model_and_the_chain_is_reproducible():
    d = Diffusion(DiffusionConfig(timesteps=100))
    clean = toy_images(4)
    config = DenoiseConfig(sigmas=(0.1,), num_images=4, protocols=("matched",), reverse="ddpm", lpips=False)
    a, ea = run_denoising(gaussian_denoiser(d), d, clean, config, Scorer(12, None, "off"), seed=5)
    b, eb = run_denoising(gaussian_denoiser(d, s=0.5), d, clean, config, Scorer(12, None, "off"), seed=5)
    assert torch.equal(ea[0.1]["noisy"], eb[0.1]["noisy"])
    assert torch.equal(a[0].values["psnr"][0], b[0].values["psnr"][0])  # the same noisy input
    again, _ = run_denoising(gaussian_denoiser(d), d, clean, config, Scorer(12, None, "off"), seed=5)
    assert torch.equal(a[0].values["psnr"], again[0].values["psnr"])


def test_reverse_chain_reports_every_step_down_to_zero():
    d = Diffusion(DiffusionConfig(timesteps=50))
    seen = []
    z = 2 * toy_images(2) - 1
    final = reverse_chain(gaussian_denoiser(d), d, z, 7, on_step=lambda k, t, image: seen.append((k, t)))
    assert seen == [(k, 7 - k) for k in range(1, 9)]
    assert final.min() >= 0 and final.max() <= 1


@pytest.mark.parametrize(("denoise", "message"), [
    ({"sigmas": []}, "denoise.sigmas: needs at least one noise level"),
    ({"sigmas": [0.1, 1.5]}, "denoise.sigmas: 1.5 is not a noise level; allowed: numbers in (0, 1]"),
    ({"protocols": ["best"]}, "denoise.protocols: unknown protocol 'best'; allowed: matched, sweep"),
    ({"reverse": "euler"}, "denoise.reverse: unknown reverse update 'euler'; allowed: ddim, ddpm, posterior_mean"),
    ({"sweep_start": 1000}, "denoise.sweep_start: 1000 is past the last step; at most diffusion.timesteps - 1 (999)"),
])
def test_bad_denoise_settings_are_named(denoise, message):
    with pytest.raises(ConfigError) as err:
        parse_experiment({"datasets": [{"name": "digits"}], "models": [], "denoise": denoise})
    assert str(err.value) == message


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke config's U-Net, trained 20 steps, and its test split at 12x12 (SSIM needs 11x11)."""
    root = tmp_path_factory.mktemp("denoise")
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    cfg["datasets"][0]["image_size"] = 12
    cfg["models"][0]["options"] = {"dim_mults": [1, 2]}  # 12 halves once
    cfg["denoise"] = {"sigmas": [0.1, 0.3], "num_images": 6, "batch_size": 4}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base = ["--config", str(path)]
    for split in ("train", "test"):
        assert main(["prepare-data", *base, "--split", split, "--out", str(root / f"{split}.pt")]) == 0
    assert main(["train", *base, "--model", "unet", "--data", str(root / "train.pt"), "--out-dir",
                 str(root / "unet"), "--no-progress"]) == 0
    return root, base


def test_cli_writes_every_output_and_says_lpips_was_not_computed(smoke_run, tmp_path):
    root, base = smoke_run
    out = tmp_path / "d" / "unet.csv"
    home = tmp_path / "empty_home"
    assert main(["denoise", *base, "--checkpoint", str(root / "unet/ema.pt"), "--data", str(root / "test.pt"),
                 "--out", str(out), "--torch-home", str(home), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["protocol"], float(r["sigma"])) for r in rows] == [("matched", 0.1), ("matched", 0.3),
                                                                   ("sweep", 0.1), ("sweep", 0.3)]
    hint = f"not computed: stage alexnet-owt-7be5be79.pth in {(home / 'hub/checkpoints').resolve()}"
    for r in rows:
        assert r["lpips"] == hint and r["lpips_noisy"] == hint
        assert math.isfinite(float(r["psnr"])) and 0 < float(r["ssim"]) <= 1 and float(r["seconds_per_image"]) > 0
        assert r["device_name"] and r["model"] == "unet" and r["dataset"] == "digits"
    images = list(csv.DictReader(out.with_suffix(".images.csv").open()))
    assert len(images) == 4 * 6 and all(r["lpips"] == hint for r in images)
    curves = list(csv.DictReader(out.with_suffix(".curves.csv").open()))
    t_star = {float(r["sigma"]): int(r["t_start"]) for r in rows if r["protocol"] == "matched"}
    assert len(curves) == sum(t + 2 for t in t_star.values()) + 2 * (max(t_star.values()) + 2)
    examples = torch.load(out.with_suffix(".examples.pt"), weights_only=True)
    assert examples["sigmas"] == [0.1, 0.3] and examples["examples"][0]["denoised"].shape == (4, 1, 12, 12)


def test_cli_rejects_a_test_split_of_another_shape(smoke_run, tmp_path, capsys):
    root, base = smoke_run
    other = tmp_path / "other.pt"
    assert main(["prepare-data", *base, "--set", "datasets.digits.image_size=8", "--split", "test",
                 "--out", str(other)]) == 0
    assert main(["denoise", *base, "--checkpoint", str(root / "unet/ema.pt"), "--data", str(other),
                 "--out", str(tmp_path / "y.csv"), "--no-progress"]) == 1
    assert "holds images of shape (1, 8, 8); the checkpoint's model takes (1, 12, 12)" in capsys.readouterr().err


def test_fetch_weights_offline_reports_what_to_stage(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    status = tmp_path / "status.json"
    assert main(["fetch-weights", "--torch-home", str(tmp_path), "--status", str(status), "--no-progress"]) == 1
    assert main(["fetch-weights", "--torch-home", str(tmp_path), "--status", str(status), "--allow-missing",
                 "--no-progress"]) == 0
    data = json.loads(status.read_text())["weights"]
    assert set(data) == {"lpips_alex", "inception"} and not any(e["present"] for e in data.values())
    assert data["lpips_alex"]["note"].startswith("not computed: stage alexnet-owt-7be5be79.pth in ")
    capsys.readouterr()
    assert main(["fetch-weights", "--weights", "vgg", "--torch-home", str(tmp_path)]) == 1
    assert "--weights: unknown 'vgg'; allowed: lpips_alex, inception" in capsys.readouterr().err
