"""FID / KID / Inception Score through torch-fidelity (missingu.metrics.fid), offline.

The real Inception weights cannot be downloaded here, so the end-to-end tests stage a file with the
right state-dict keys and seeded random values: they check the plumbing (loading from the staged path,
grayscale input, set sizes, KID subset capping, ISC keys, no files written), that the step-by-step
computation gives ``torch_fidelity.calculate_metrics``'s values, that the returned pool3 features are the
ones FID was computed from, and properties that hold for any feature extractor (FID of a set against
itself is 0), not the values of the real metric.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_fidelity
from torch_fidelity import metric_fid, metric_isc, metric_kid
from torch_fidelity import utils as fidelity_utils
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from missingu.metrics.fid import ImageTensorDataset, fidelity_metrics, kid_subset
from missingu.metrics.frechet import frechet_distance_features
from missingu.weights import WeightsUnavailable, weight_path

INCEPTION = "weights-inception-2015-12-05-6726825d.pth"


def images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def refuse(*args, **kwargs):
    raise AssertionError("torch-fidelity must not be called")


@pytest.fixture
def no_torch_fidelity(monkeypatch):
    """Every torch-fidelity entry point fidelity_metrics could reach (or used to) raises."""
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", refuse)
    monkeypatch.setattr(fidelity_utils, "create_feature_extractor", refuse)
    monkeypatch.setattr(fidelity_utils, "get_featuresdict_from_dataset", refuse)


def test_missing_inception_file_raises_the_stage_hint_before_torch_fidelity(tmp_path: Path, no_torch_fidelity):
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
def test_inputs_are_validated(tmp_path: Path, no_torch_fidelity, generated, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fidelity_metrics(generated, reference, tmp_path, **kwargs)


def test_arguments_reach_torch_fidelity(tmp_path: Path, monkeypatch):
    """The calls themselves, with stand-ins for the feature extractor and the feature extraction (seeded
    random features, 16-d to keep FID cheap): the metrics are torch-fidelity's functions of those features
    with our subset size, splits and torch-fidelity's default seed; the features come back as returned."""
    path = weight_path("inception", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not read by the stand-in")
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", refuse)
    created, extracted = [], []
    extractor = object()

    def create(name, list_features, cuda=True, **kwargs):
        created.append((name, list(list_features), cuda, kwargs))
        return extractor

    def extract(input, feat_extractor, batch_size, cuda, save_cpu_ram, verbose):
        extracted.append((input, feat_extractor, batch_size, cuda, save_cpu_ram, verbose))
        g = torch.Generator().manual_seed(len(extracted))
        n = len(input)
        return {"2048": torch.randn(n, 16, generator=g), "logits_unbiased": 3 * torch.randn(n, 10, generator=g)}

    monkeypatch.setattr(fidelity_utils, "create_feature_extractor", create)
    monkeypatch.setattr(fidelity_utils, "get_featuresdict_from_dataset", extract)
    gen, ref = images(7, 1, 16, 16), images(30, 3, 12, 20, seed=1)
    out = fidelity_metrics(gen, ref, tmp_path, kid_subset_size=500, isc=True, device="cuda", batch_size=5)

    assert len(created) == 1
    name, layers, cuda, kwargs = created[0]
    assert (name, layers, cuda) == ("inception-v3-compat", ["2048", "logits_unbiased"], True)
    assert kwargs["feature_extractor_weights_path"] == str(path) and kwargs["verbose"] is False
    assert kwargs["cache"] is False and "feature_extractor" not in kwargs  # torch-fidelity's default, no compile
    assert [len(e[0]) for e in extracted] == [7, 30]
    for dataset, *rest in extracted:
        assert isinstance(dataset, ImageTensorDataset) and rest == [extractor, 5, True, True, False]
    assert torch.equal(extracted[0][0][2], gen[2].repeat(3, 1, 1)) and torch.equal(extracted[1][0][29], ref[29])

    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    f_gen, l_gen = torch.randn(7, 16, generator=g1), 3 * torch.randn(7, 10, generator=g1)
    f_ref = torch.randn(30, 16, generator=g2)
    expected_fid = metric_fid.fid_statistics_to_metric(
        metric_fid.fid_features_to_statistics(f_gen), metric_fid.fid_features_to_statistics(f_ref), False
    )["frechet_inception_distance"]
    kid = metric_kid.kid_features_to_metric(
        f_gen, f_ref, kid_subset_size=7, kid_subsets=100, rng_seed=2020, verbose=False
    )
    isc = metric_isc.isc_features_to_metric(l_gen, splits=3, shuffle=True, rng_seed=2020)
    assert out.pop("features_generated").equal(f_gen) and out.pop("features_reference").equal(f_ref)
    assert out == {
        "fid": expected_fid,
        "kid_mean": kid["kernel_inception_distance_mean"],
        "kid_std": kid["kernel_inception_distance_std"],
        "isc_mean": isc["inception_score_mean"],
        "isc_std": isc["inception_score_std"],
        "kid_subset_size": 7,
        "num_generated": 7,
        "num_reference": 30,
        "isc_splits": 3,
    }
    assert out["kid_std"] > 0 and out["isc_std"] > 0  # subsets and splits differ: the seeds are exercised

    created.clear()
    extracted.clear()
    out = fidelity_metrics(gen, ref, tmp_path)
    assert created[0][1:3] == (["2048"], False) and [e[2:4] for e in extracted] == [(64, False)] * 2
    assert "isc_splits" not in out and "isc_mean" not in out and out["kid_subset_size"] == 7
    assert out["features_generated"].shape == (7, 16) and out["features_reference"].shape == (30, 16)


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

    # the same images in the same batches: the same features
    assert torch.equal(same["features_generated"], same["features_reference"])
    assert torch.equal(other["features_generated"], same["features_generated"])
    assert other["features_reference"].shape == (3, 2048)

    assert list(cwd.iterdir()) == [] and list(torch_env.iterdir()) == []
    assert sorted(p.relative_to(random_inception_home) for p in random_inception_home.rglob("*")) == before


def _two_sets() -> tuple[torch.Tensor, torch.Tensor]:
    """4 grayscale noise images and 5 RGB gradients with a bar, of another size (tiny: Inception resizes)."""
    a = images(4, 1, 16, 16, seed=3)
    b = torch.zeros(5, 3, 12, 20, dtype=torch.uint8)
    b[:, 1] = torch.arange(20, dtype=torch.uint8).mul(12).view(1, 1, 20)
    b[:, 0] = torch.tensor([0, 60, 120, 180, 240], dtype=torch.uint8).view(5, 1, 1)
    b[:, 2, 2:8, 4:16] = 255
    return a, b


@pytest.fixture(scope="module")
def two_sets_metrics(random_inception_home: Path) -> dict:
    """fidelity_metrics of the two sets with IS, KID on subsets of 3 of 4 and 5 images (so kid_std is
    not round-off), batches of 3 (so both sets take two batches)."""
    a, b = _two_sets()
    return fidelity_metrics(a, b, random_inception_home, kid_subset_size=3, isc=True, batch_size=3)


@pytest.mark.slow  # two Inception runs over 9 images and two FIDs (seconds on a CPU)
def test_values_are_those_of_calculate_metrics(two_sets_metrics: dict, random_inception_home: Path):
    a, b = _two_sets()
    raw = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(a),
        input2=ImageTensorDataset(b),
        fid=True,
        kid=True,
        isc=True,
        kid_subset_size=3,
        isc_splits=2,
        feature_extractor_weights_path=str(weight_path("inception", random_inception_home)),
        cuda=False,
        batch_size=3,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    out = two_sets_metrics
    assert (out["kid_subset_size"], out["isc_splits"], out["num_generated"], out["num_reference"]) == (3, 2, 4, 5)
    pairs = {
        "fid": "frechet_inception_distance",
        "kid_mean": "kernel_inception_distance_mean",
        "kid_std": "kernel_inception_distance_std",
        "isc_mean": "inception_score_mean",
        "isc_std": "inception_score_std",
    }
    assert set(raw) == set(pairs.values())
    for ours, theirs in pairs.items():
        assert isinstance(out[ours], float) and out[ours] == pytest.approx(raw[theirs], rel=1e-6), ours
    assert out["fid"] > 1.0 and out["kid_std"] > 0 and out["isc_std"] > 0  # none of them trivially 0


@pytest.mark.slow  # one more FID (numpy eigensolver on 2048 x 2048)
def test_returned_features_are_the_pool3_features_fid_comes_from(two_sets_metrics: dict):
    gen, ref = two_sets_metrics["features_generated"], two_sets_metrics["features_reference"]
    for features, n in ((gen, 4), (ref, 5)):
        assert features.shape == (n, 2048) and features.dtype == torch.float32 and features.device.type == "cpu"
        assert torch.isfinite(features).all() and features.abs().sum() > 0
    assert not torch.equal(gen[:2], gen[2:])  # per image, not a repeated row
    # our own Frechet distance (float64, symmetric eigensolvers) of the returned features is the returned
    # FID (torch-fidelity's: float32 means, float64 covariances, general eigensolver)
    fid = two_sets_metrics["fid"]
    assert frechet_distance_features(ref, gen) == pytest.approx(fid, rel=1e-5)
