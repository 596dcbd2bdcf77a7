"""FID / KID / Inception Score through torch-fidelity (missingu.metrics.fid), offline.

The real Inception weights cannot be downloaded here, so the end-to-end test stages a file with the
right state-dict keys and seeded random values: it checks the plumbing (loading from the staged path,
grayscale input, set sizes, KID subset capping, ISC keys, no files written) and properties that hold
for any feature extractor (FID of a set against itself is 0), not the values of the real metric.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from missingu.metrics.fid import ImageTensorDataset, fidelity_metrics, kid_subset
from missingu.weights import WeightsUnavailable, weight_path

INCEPTION = "weights-inception-2015-12-05-6726825d.pth"


def images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def refuse(**kwargs):
    raise AssertionError("torch_fidelity.calculate_metrics must not be called")


def test_missing_inception_file_raises_the_stage_hint_before_torch_fidelity(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", refuse)
    x = images(4, 3, 16, 16)
    with pytest.raises(WeightsUnavailable) as err:
        fidelity_metrics(x, x, tmp_path)
    ckpt = tmp_path / "hub" / "checkpoints"
    assert ckpt.is_absolute()
    assert str(err.value) == f"not computed: stage {INCEPTION} in {ckpt}"
    assert not (tmp_path / "hub").exists()  # nothing created either


def test_dataset_replicates_gray_to_rgb_and_keeps_uint8():
    gray = images(5, 1, 7, 9)
    ds = ImageTensorDataset(gray)
    assert len(ds) == 5
    item = ds[3]
    assert item.dtype == torch.uint8 and item.shape == (3, 7, 9)
    assert all(torch.equal(item[k], gray[3, 0]) for k in range(3))
    rgb = images(2, 3, 4, 6)
    ds = ImageTensorDataset(rgb)
    assert len(ds) == 2 and ds[1].dtype == torch.uint8 and torch.equal(ds[1], rgb[1])


def test_kid_subset_size_is_capped_at_the_smaller_set():
    assert kid_subset(None, 5000, 3000) == 1000
    assert kid_subset(None, 40, 300) == 40
    assert kid_subset(64, 40, 300) == 40
    assert kid_subset(16, 40, 300) == 16
    for bad in (1, 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="kid_subset_size must be an integer >= 2"):
            kid_subset(bad, 40, 300)


OK = images(3, 3, 8, 8)


@pytest.mark.parametrize(
    ("generated", "reference", "kwargs", "match"),
    [
        (OK.float(), OK, {}, r"generated: expected dtype torch.uint8"),
        (OK, OK.to(torch.int16), {}, r"reference: expected dtype torch.uint8"),
        (OK[0], OK, {}, r"generated: expected 4 dimensions \(N, C, H, W\), got shape \(3, 8, 8\)"),
        (OK, images(3, 2, 8, 8), {}, r"reference: expected 1 or 3 channels, got 2"),
        (images(3, 4, 8, 8), OK, {}, r"generated: expected 1 or 3 channels, got 4"),
        (OK[:1], OK, {}, r"generated: need at least 2 images"),
        (OK, OK[:1], {}, r"reference: need at least 2 images"),
        (OK, OK[:, :, :0], {}, r"reference: empty images"),
        ([OK], OK, {}, r"generated: expected a uint8 tensor \(N, C, H, W\), got list"),
        (OK, OK, {"kid_subset_size": 1}, r"kid_subset_size must be an integer >= 2"),
        (OK, OK, {"batch_size": 0}, r"batch_size must be a positive integer"),
        (OK, OK, {"device": "meta"}, r"device must be a CPU or CUDA device"),
    ],
)
def test_inputs_are_validated(tmp_path: Path, monkeypatch, generated, reference, kwargs, match):
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", refuse)
    with pytest.raises(ValueError, match=match):
        fidelity_metrics(generated, reference, tmp_path, **kwargs)


def test_arguments_reach_torch_fidelity(tmp_path: Path, monkeypatch):
    """The call itself, with a stand-in for calculate_metrics (its result values are sentinels that only
    check the key mapping; the real computation is tested below)."""
    path = weight_path("inception", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not read by the stand-in")
    seen = {}

    def stand_in(**kwargs):
        seen.update(kwargs)
        return {
            "frechet_inception_distance": 1.5,
            "kernel_inception_distance_mean": 2.5,
            "kernel_inception_distance_std": 3.5,
            "inception_score_mean": 4.5,
            "inception_score_std": 5.5,
        }

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", stand_in)
    gen, ref = images(7, 1, 16, 16), images(30, 3, 12, 20, seed=1)
    out = fidelity_metrics(gen, ref, tmp_path, kid_subset_size=500, isc=True, device="cuda", batch_size=5)
    assert out == {
        "fid": 1.5,
        "kid_mean": 2.5,
        "kid_std": 3.5,
        "isc_mean": 4.5,
        "isc_std": 5.5,
        "kid_subset_size": 7,
        "num_generated": 7,
        "num_reference": 30,
        "isc_splits": 3,
    }
    assert isinstance(seen.pop("input1"), ImageTensorDataset) and isinstance(seen.pop("input2"), ImageTensorDataset)
    assert seen == {
        "fid": True,
        "kid": True,
        "isc": True,
        "kid_subset_size": 7,
        "isc_splits": 3,
        "feature_extractor_weights_path": str(path),
        "cuda": True,
        "batch_size": 5,
        "cache": False,
        "save_cpu_ram": True,
        "verbose": False,
    }
    out = fidelity_metrics(gen, ref, tmp_path)
    assert seen["cuda"] is False and seen["isc"] is False and seen["kid_subset_size"] == 7
    assert "isc_splits" not in out and "num_generated" in out


class _Architecture(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception without loading weights (its constructor always loads a state dict)."""

    def load_state_dict(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def random_inception_home(tmp_path_factory) -> Path:
    """A torch home with ``hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`` holding the full
    state dict (566 tensors, ~96 MB) of torch-fidelity's Inception with seeded random conv weights;
    torch-fidelity's constructor loads it with a strict ``load_state_dict`` (same keys and shapes).

    Convs get He-normal weights (fan-in, ReLU gain) so the activation scale survives the ~20 conv layers:
    with PyTorch's default init (variance 1 / (3 fan_in)) each layer shrinks it several-fold and the pool3
    features come out ~1e-8, making every FID ~1e-13. BatchNorm keeps its defaults (mean 0, var 1)."""
    home = tmp_path_factory.mktemp("torch_home")
    path = weight_path("inception", home)
    path.parent.mkdir(parents=True)
    empty = home / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    model = _Architecture("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    empty.unlink()
    return home


@pytest.mark.slow  # two FIDs: each is numpy's general eigensolver on a 2048 x 2048 matrix (seconds on a CPU)
def test_end_to_end_with_random_inception(random_inception_home: Path, tmp_path: Path, monkeypatch):
    # nothing may be written: not in the working directory, not in $TORCH_HOME (torch-fidelity's cache root)
    cwd, torch_env = tmp_path / "cwd", tmp_path / "env_torch_home"
    cwd.mkdir()
    torch_env.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TORCH_HOME", str(torch_env))
    before = sorted(p.relative_to(random_inception_home) for p in random_inception_home.rglob("*"))

    # 3 images a set keeps the 12 Inception passes at 299 x 299 cheap on a CPU
    a = images(3, 1, 16, 16, seed=2)  # noise, grayscale
    b = torch.zeros(3, 3, 12, 20, dtype=torch.uint8)  # flat colours with a blue bar, RGB, another size
    b[:, 0] = torch.tensor([0, 90, 180], dtype=torch.uint8).view(3, 1, 1)
    b[:, 2, 3:9, 5:15] = 255

    same = fidelity_metrics(a, a, random_inception_home, kid_subset_size=50, isc=True, batch_size=3)
    other = fidelity_metrics(a, b, random_inception_home)

    # FID(A, A) is exactly 0 in exact arithmetic. torch-fidelity takes Tr((C1 C2)^(1/2)) from the
    # eigenvalues of the non-symmetric 2048x2048 product C C of rank 2 (3 images): the ~2046 zero
    # eigenvalues come out as float64 round-off ~1e-16 |C|^2, whose square roots add ~1e-8 |C| each;
    # here FID(A, A) = -2.6e-6 (sets of 4 and 6 images gave 1e-7..1.5e-5, growing with Tr C). 1e-3 is
    # far above that round-off and far below FID(A, B) (28 here).
    assert abs(same["fid"]) < 1e-3
    assert other["fid"] > 1.0 and other["fid"] > 1e3 * abs(same["fid"])
    # KID of a set against the same images is <= 0, not 0: the unbiased MMD^2 skips the diagonal
    # k(x_i, x_i) in the within-set terms but not in the cross term, and for a PSD kernel
    # sum_{i != j} K_ij <= (m - 1) sum_i K_ii. (No ordering of KID(A, B) is asserted: with 3 images and
    # random features its sign is not meaningful.)
    assert same["kid_mean"] <= 1e-12
    for out in (same, other):
        assert out["kid_subset_size"] == 3 and out["num_generated"] == 3 and out["num_reference"] == 3
        # every subset is the whole set, permuted: the spread is float32 round-off in the kernel sums
        assert out["kid_std"] < 1e-5
        assert all(isinstance(out[k], float) for k in ("fid", "kid_mean", "kid_std"))
    assert same["isc_splits"] == 1 and same["isc_mean"] >= 1 - 1e-9 and same["isc_std"] >= 0
    assert torch.isfinite(torch.tensor([same["isc_mean"], same["isc_std"]])).all()
    assert "isc_mean" not in other and "isc_std" not in other

    assert list(cwd.iterdir()) == [] and list(torch_env.iterdir()) == []
    assert sorted(p.relative_to(random_inception_home) for p in random_inception_home.rglob("*")) == before
