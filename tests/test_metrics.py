"""PSNR, SSIM and LPIPS against their formulas and reference implementations; weight staging offline."""

from __future__ import annotations

import math
import urllib.error
import warnings
import zipfile
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torchvision
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from missingu import weights
from missingu.io import InputFileError
from missingu.metrics import (
    LPIPS_MIN_SIDE,
    check_pair,
    load_lpips,
    lpips_distance,
    lpips_input,
    psnr,
    ssim,
)
from missingu.weights import WeightsDownloadError, WeightsUnavailable

ALEX = "alexnet-owt-7be5be79.pth"


def pair(n: int, c: int, side: int, noise: float = 0.1, seed: int = 0, dtype=torch.float32):
    """Seeded images in [0, 1] and a noisy copy, clamped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, side, side, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


# ---------------------------------------------------------------------------------------------- PSNR


def test_psnr_matches_formula_and_skimage():
    x, y = pair(4, 3, 32, dtype=torch.float64)
    got = psnr(x, y)
    assert got.shape == (4,)
    for i in range(4):
        mse = float(((x[i] - y[i]) ** 2).mean())
        assert got[i].item() == pytest.approx(10 * math.log10(1.0 / mse), abs=1e-10)
        assert got[i].item() == pytest.approx(peak_signal_noise_ratio(hwc(x[i]), hwc(y[i]), data_range=1.0), abs=1e-10)
    assert psnr(x * 0.5, y * 0.5, data_range=0.5) == pytest.approx(got, abs=1e-9)  # scale-free


def test_psnr_identical_images_are_inf_per_image():
    x, y = pair(2, 1, 16)
    y[0] = x[0]
    got = psnr(x, y)
    assert got[0].item() == float("inf") and math.isfinite(got[1].item())
    assert got.dtype == torch.float32


# ---------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("c, side", [(3, 32), (1, 16), (1, 11)])
def test_ssim_matches_skimage(c, side):
    """Default ``border="valid"``: the mean over the window-interior equals scikit-image's SSIM."""
    x, y = pair(4, c, side, seed=side)
    got = ssim(x, y)
    assert got.shape == (4,)
    for i in range(4):
        ref = structural_similarity(
            hwc(x[i]), hwc(y[i]), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=2,
        )
        assert abs(got[i].item() - ref) < 1e-5  # float32 maps; 1e-15 in float64


def test_ssim_reflect_is_torchmetrics_whole_map_mean_which_skimage_does_not_match():
    """torchmetrics averages the whole map, borders included (computed on reflect padding); scikit-image
    crops (win - 1) / 2 = 5 pixels. On 16x16 digits the two differ by far more than 1e-3."""
    x, y = pair(4, 1, 16, seed=16, dtype=torch.float64)
    tm = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, k1=0.01, k2=0.03, reduction="none"
    )
    assert torch.equal(ssim(x, y, border="reflect"), tm)
    sk = np.array([
        structural_similarity(hwc(x[i]), hwc(y[i]), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0, channel_axis=2)
        for i in range(4)
    ])
    assert np.abs(tm.numpy() - sk).max() > 1e-3
    assert np.abs(ssim(x, y).numpy() - sk).max() < 1e-12


def test_ssim_identical_is_one_and_noise_lowers_it():
    x, y = pair(3, 3, 16)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    _, far = pair(3, 3, 16, noise=0.4)
    assert (ssim(x, far) < ssim(x, y)).all()


def test_ssim_rejects_images_smaller_than_the_window():
    x, y = pair(1, 1, 10)
    with pytest.raises(ValueError, match=r"at least 11x11 pixels .* got 10x10"):
        ssim(x, y)
    with pytest.raises(ValueError, match="border"):
        ssim(*pair(1, 1, 16), border="same")


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.zeros(2, 3, 16, 16) - 1, torch.zeros(2, 3, 16, 16), r"x: values must lie in \[0, 1\]"),
        (torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), float("nan")), r"y: values must lie"),
        (torch.zeros(2, 2, 16, 16), torch.zeros(2, 2, 16, 16), "C = 1 or 3"),
        (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), r"shape \(3, 16, 16\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.zeros(2, 3, 16, 16), "float images"),
        (torch.zeros(2, 1, 16, 16), torch.zeros(1, 1, 16, 16), "differ in shape"),
    ],
)
def test_inputs_are_checked(x, y, match):
    with pytest.raises(ValueError, match=match):
        check_pair(x, y)


# ------------------------------------------------------------------------------------------- weights


def test_registry_names_urls_and_hash_prefixes():
    alex, inception = weights.WEIGHTS["lpips_alex"], weights.WEIGHTS["inception"]
    assert alex.url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url == alex.url
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert inception.url == URL_INCEPTION_V3
    for entry in weights.WEIGHTS.values():
        assert entry.url.endswith("/" + entry.file)
    assert alex.hash_prefix == "7be5be79"
    assert inception.hash_prefix is None  # torch-fidelity does not check it
    with pytest.raises(ValueError, match="unknown weights 'vgg'; allowed: inception, lpips_alex"):
        weights.weight_path("vgg")


def test_missing_weights_and_stage_hint(tmp_path: Path):
    ckpt = tmp_path / "hub" / "checkpoints"
    assert weights.weight_path("lpips_alex", tmp_path) == ckpt / ALEX
    assert weights.missing_weights(["lpips_alex", "inception"], tmp_path) == ["lpips_alex", "inception"]
    assert weights.stage_hint("lpips_alex", tmp_path) == f"not computed: stage {ALEX} in {ckpt}"
    ckpt.mkdir(parents=True)
    (ckpt / ALEX).write_bytes(b"x")
    assert weights.missing_weights(["lpips_alex", "inception"], tmp_path) == ["inception"]


def test_checkpoints_dir_is_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert weights.checkpoints_dir() == tmp_path / "resources" / "torch_home" / "hub" / "checkpoints"
    assert weights.checkpoints_dir("a/../b") == tmp_path / "b" / "hub" / "checkpoints"


def test_fetch_weights_offline_raises_a_one_line_stage_hint(tmp_path: Path, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsDownloadError) as info:
        weights.fetch_weights(["lpips_alex"], tmp_path, progress=False)
    err, ckpt = info.value, tmp_path / "hub" / "checkpoints"
    assert isinstance(err, WeightsUnavailable)
    assert err.hint == f"not computed: stage {ALEX} in {ckpt}"
    assert str(err) == (
        f"not computed: stage {ALEX} in {ckpt} (download from https://download.pytorch.org/models/{ALEX} "
        f"failed: [Errno -3] Temporary failure in name resolution)"
    )
    assert list(ckpt.iterdir()) == []  # no temporary file left behind


def test_fetch_weights_other_os_error(tmp_path: Path, monkeypatch):
    def full(url, dst, hash_prefix=None, progress=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.hub, "download_url_to_file", full)
    with pytest.raises(WeightsDownloadError, match=r"failed: \[Errno 28\] No space left on device\)$"):
        weights.fetch_weights(["inception"], tmp_path)


def test_fetch_weights_keeps_present_files_and_downloads_the_rest(tmp_path: Path, monkeypatch):
    calls = []

    def fake(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        assert Path(dst).parent == tmp_path / "hub" / "checkpoints" and Path(dst).name.startswith(".")
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    alex = weights.weight_path("lpips_alex", tmp_path)
    alex.parent.mkdir(parents=True)
    alex.write_bytes(b"staged")
    paths = weights.fetch_weights(["lpips_alex", "inception"], tmp_path, progress=False)
    assert paths == [alex, weights.weight_path("inception", tmp_path)]
    assert calls == [(weights.WEIGHTS["inception"].url, None)]
    assert alex.read_bytes() == b"staged" and paths[1].read_bytes() == b"weights"
    assert sorted(p.name for p in alex.parent.iterdir()) == sorted([ALEX, weights.WEIGHTS["inception"].file])

    def never(*args, **kwargs):
        raise AssertionError("a present file was downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", never)
    assert weights.fetch_weights(["inception", "lpips_alex"], tmp_path) == [paths[1], alex]


def test_fetch_weights_passes_the_hash_prefix(tmp_path: Path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, hash_prefix=None, progress=True: (seen.append(hash_prefix), Path(dst).write_bytes(b"w")))
    weights.fetch_weights(["lpips_alex"], tmp_path)
    assert seen == ["7be5be79"]


# --------------------------------------------------------------------------------------------- LPIPS


def random_lpips() -> torch.nn.Module:
    """LPIPS with a random AlexNet trunk and the wheel's linear heads: needs no download."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)


@pytest.fixture(scope="module")
def rand_lpips() -> torch.nn.Module:
    return random_lpips()


def test_random_trunk_lpips_builds_offline_with_the_wheels_heads(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    model = random_lpips()
    assert list(tmp_path.iterdir()) == []
    heads = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True)
    for key, value in heads.items():
        assert torch.equal(model.state_dict()[key], value)


def test_load_lpips_without_the_alexnet_file_says_where_to_stage_it(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(WeightsUnavailable) as info:
        load_lpips(tmp_path)
    assert str(info.value) == f"not computed: stage {ALEX} in {tmp_path / 'hub' / 'checkpoints'}"
    assert "\n" not in str(info.value)


def stage_fake_alexnet(torch_home: Path) -> Path:
    """A torchvision-format AlexNet checkpoint with seeded random features (the classifier, unused by
    LPIPS, as zero-stride tensors so the file stays small), in torch's pre-1.6 (non-zip) format like
    the real 2017 file."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).state_dict().items()}
    g = torch.Generator().manual_seed(1)
    state = {
        k: 0.05 * torch.randn(s, generator=g) if k.startswith("features.") else torch.zeros(1).expand(s)
        for k, s in shapes.items()
    }
    path = torch_home / "hub" / "checkpoints" / ALEX
    path.parent.mkdir(parents=True)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    return path


def test_load_lpips_equals_lpips_own_pretrained_loader(tmp_path: Path, monkeypatch):
    stage_fake_alexnet(tmp_path)
    model = load_lpips(tmp_path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # lpips' own path: torchvision's loader reads $TORCH_HOME/hub/checkpoints (no download: the file is there)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if torch.hub.get_dir() != str(tmp_path / "hub"):
        pytest.skip("torch.hub.set_dir was called in this process; TORCH_HOME is not read")
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: pytest.fail("tried to download"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=False, verbose=False)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    x, y = pair(2, 3, 32)
    assert torch.allclose(lpips_distance(model, x, y), ref(x, y, normalize=True).flatten(), atol=1e-6)


def test_load_lpips_rejects_a_file_that_is_not_the_checkpoint(tmp_path: Path):
    path = tmp_path / "hub" / "checkpoints" / ALEX
    path.parent.mkdir(parents=True)
    path.write_text("<html>rate limited</html>")
    with pytest.raises(InputFileError, match=f"{ALEX} is not torchvision's AlexNet checkpoint"):
        load_lpips(tmp_path)
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(InputFileError, match=r"features.0.weight should be \(64, 3, 11, 11\), found \(3,\)"):
        load_lpips(tmp_path)


@pytest.mark.parametrize("c, side", [(3, 32), (1, 16)])
def test_lpips_distance_is_zero_for_identical_images_and_grows_with_noise(rand_lpips, c, side):
    x, _ = pair(3, c, side)
    same = lpips_distance(rand_lpips, x, x)
    assert same.shape == (3,) and same.abs().max() < 1e-6
    means = [lpips_distance(rand_lpips, x, pair(3, c, side, noise=s)[1]).mean().item() for s in (0.05, 0.1, 0.2, 0.4)]
    assert 0 < means[0] < means[1] < means[2] < means[3], means


def test_lpips_small_images_are_upsampled_to_the_minimum_side(rand_lpips):
    x, y = pair(2, 1, 16)
    up = torch.nn.functional.interpolate(x.repeat(1, 3, 1, 1), size=(31, 31), mode="bilinear", align_corners=False)
    assert torch.equal(lpips_input(x), 2 * up - 1)
    assert lpips_input(torch.zeros(1, 3, 16, 40)).shape[-2:] == (31, 78)  # short side to 31, aspect kept
    assert lpips_input(torch.zeros(1, 3, 32, 32)).shape[-2:] == (32, 32)  # large enough: untouched
    ref = rand_lpips(lpips_input(x), lpips_input(y)).flatten()
    assert torch.equal(lpips_distance(rand_lpips, x, y), ref)


def test_lpips_min_side_is_alexnets_minimum(rand_lpips):
    with torch.no_grad():
        rand_lpips(torch.zeros(1, 3, LPIPS_MIN_SIDE, LPIPS_MIN_SIDE), torch.zeros(1, 3, LPIPS_MIN_SIDE, LPIPS_MIN_SIDE))
        with pytest.raises(RuntimeError, match="Output size is too small"):
            side = LPIPS_MIN_SIDE - 1
            rand_lpips(torch.zeros(1, 3, side, side), torch.zeros(1, 3, side, side))
