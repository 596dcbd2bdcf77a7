"""Frechet distance against closed forms and scipy; the digits classifier: accuracy, a distance that
separates real from degraded images, label histograms, checkpoints, config and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from missingu.classifier import (
    ClassifierConfig,
    SmallClassifier,
    accuracy,
    classifier_frechet_distance,
    downsampling_stages,
    extract_features,
    label_histogram,
    load_classifier,
    predict,
    save_classifier,
    split_holdout,
    to_input,
    train_classifier,
)
from missingu.config import ConfigError, build
from missingu.data import DatasetSpec
from missingu.io import InputFileError, save_torch
from missingu.metrics.frechet import frechet_distance, frechet_distance_features, gaussian_stats


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while this module runs: these tiny convolutions are as fast on one, and
    on two busy cores two threads wait for each other (measured: 200 steps 0.9 s against 22 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spd(d: int, seed: int) -> torch.Tensor:
    """A random symmetric positive definite (D, D) float64 matrix, not diagonal."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def fd_scipy(mu1, c1, mu2, c2) -> float:
    """The formula with scipy's general matrix square root of C1 C2 (the way FID code does it)."""
    root = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy())
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * np.trace(root).real)


# -------------------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_diagonal_closed_form():
    """Diagonal covariances commute: (C1 C2)^(1/2) = diag(sqrt(a b)), so the distance is
    sum_k (mu1_k - mu2_k)^2 + (sqrt(a_k) - sqrt(b_k))^2."""
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    a = torch.rand(6, generator=g, dtype=torch.float64) * 3 + 0.01
    b = torch.rand(6, generator=g, dtype=torch.float64) * 3 + 0.01
    expected = float(((mu1 - mu2) ** 2 + (a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # singular diagonal covariances (dead features) are fine too
    a[:2] = 0
    expected = float(((mu1 - mu2) ** 2 + (a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_and_is_symmetric():
    g = torch.Generator().manual_seed(1)
    d = 12
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    c1, c2 = spd(d, 2), spd(d, 3)
    got = frechet_distance(mu1, c1, mu2, c2)
    assert got == pytest.approx(fd_scipy(mu1, c1, mu2, c2), rel=1e-9)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(got, rel=1e-12)
    # float32 inputs are computed in float64 all the same
    assert frechet_distance(mu1.float(), c1.float(), mu2.float(), c2.float()) == pytest.approx(got, rel=1e-5)


def test_identical_features_give_zero():
    """Tolerance: rounding only, 1e-9 of Tr(C) (the terms that cancel); also for N < D (singular C)."""
    g = torch.Generator().manual_seed(4)
    for n, d in ((500, 16), (10, 32)):
        f = torch.randn(n, d, generator=g) * 3 + 1
        scale = float(torch.trace(gaussian_stats(f)[1]))
        assert 0 <= frechet_distance_features(f, f) <= 1e-9 * scale
        assert frechet_distance_features(f, f.clone()[torch.randperm(n, generator=g)]) <= 1e-9 * scale


def test_gaussian_stats_match_numpy():
    f = torch.randn(50, 5, generator=torch.Generator().manual_seed(5))
    mu, cov = gaussian_stats(f)
    assert mu.dtype == cov.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), f.double().numpy().mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(f.double().numpy(), rowvar=False, ddof=1), rtol=1e-10, atol=1e-14)


def test_sample_estimate_approaches_closed_form():
    """200,000 samples of N(mu1, C1) and N(mu2, C2) (non-diagonal): the distance of the fitted
    Gaussians is within 2% of the exact one (its sampling error here is well under 1%)."""
    g = torch.Generator().manual_seed(6)
    d, n = 4, 200_000
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    c1, c2 = spd(d, 7), spd(d, 8)
    exact = fd_scipy(mu1, c1, mu2, c2)
    x = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c1).T
    y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c2).T
    assert frechet_distance_features(x, y) == pytest.approx(exact, rel=0.02)


def test_frechet_rejects_bad_shapes():
    mu, cov = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match="differ in dimension: 3 vs 4"):
        frechet_distance(mu, cov, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match=r"first Gaussian: expected a mean \(D,\) and a covariance \(D, D\)"):
        frechet_distance(mu, torch.eye(4), mu, cov)
    with pytest.raises(ValueError, match="second Gaussian"):
        frechet_distance(mu, cov, mu[None], cov)
    with pytest.raises(ValueError, match="feature sets differ in dimension: 3 vs 5"):
        frechet_distance_features(torch.randn(10, 3), torch.randn(10, 5))
    with pytest.raises(ValueError, match="at least 2 rows"):
        gaussian_stats(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"expected a tensor \(N, D\)"):
        gaussian_stats(torch.randn(4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        gaussian_stats(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))


# ------------------------------------------------------------------------------------------- classifier

# Short training on 8x8 digits (~1 s on one thread). Measured with these settings: train
# accuracy 0.95, holdout 0.92, test 0.92; FD real test vs holdout 0.20, vs uniform noise 18.6
# (91x), vs a 3x3 binomial blur of the test images 2.8 (14x).
QUICK = ClassifierConfig(steps=200, batch_size=64, lr=2e-3, width=16, feature_dim=32, holdout=0.2)


@pytest.fixture(scope="module")
def digits():
    spec = DatasetSpec(name="digits", image_size=8)
    return spec.load("train"), spec.load("test")


@pytest.fixture(scope="module")
def trained(digits):
    train, _ = digits
    return train_classifier(train.images, train.labels, QUICK, seed=0)


def blur(images: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur (replicate border) of uint8 images."""
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    c = images.shape[1]
    x = F.pad(images.float(), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, k.expand(c, 1, 3, 3), groups=c).round().clamp(0, 255).to(torch.uint8)


def test_classifier_accuracy_on_digits(trained, digits):
    model, record = trained
    _, test = digits
    assert not model.training
    assert record["classes"] == list(range(10)) and record["num_classes"] == 10 and record["steps"] == 200
    assert record["train_images"] + record["holdout_images"] == 1438
    assert record["holdout_images"] == pytest.approx(0.2 * 1438, abs=10)
    assert record["train_accuracy"] > 0.88  # measured 0.95
    assert record["holdout_accuracy"] > 0.85  # measured 0.92
    assert accuracy(model, test.images, test.labels) > 0.85  # measured 0.92
    assert accuracy(model, test.images, test.labels, classes=list(range(10))) == accuracy(model, test.images, test.labels)


def test_classifier_distance_separates_real_from_degraded(trained, digits):
    model, record = trained
    train, test = digits
    _, held = split_holdout(train.labels, QUICK.holdout, seed=2 * record["seed"])
    noise = torch.randint(0, 256, test.images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    real = classifier_frechet_distance(model, test.images, train.images[held])  # measured 0.20
    vs_noise = classifier_frechet_distance(model, test.images, noise)  # measured 18.6
    vs_blur = classifier_frechet_distance(model, test.images, blur(test.images))  # measured 2.8
    assert real < 1.0
    assert vs_noise > 20 * real
    assert vs_blur > 5 * real
    assert vs_noise > vs_blur
    assert classifier_frechet_distance(model, test.images, test.images) < 1e-6
    assert classifier_frechet_distance(model, test.images, noise, batch_size=50) == pytest.approx(vs_noise, rel=1e-6)


def test_label_histogram_and_predict(trained, digits):
    model, _ = trained
    _, test = digits
    hist = label_histogram(model, test.images, list(range(10)))
    assert list(hist) == list(range(10)) and sum(hist.values()) == len(test)
    assert all(v > 0 for v in hist.values())
    # a generator that drops every mode but "3": the histogram shows it
    threes = test.images[test.labels == 3]
    hist = label_histogram(model, threes)
    assert set(hist) == set(range(10)) and sum(hist.values()) == len(threes)
    assert hist[3] > 0.8 * len(threes) and sum(v == 0 for v in hist.values()) >= 5
    pred = predict(model, test.images, batch_size=100)
    assert pred.dtype == torch.long and pred.shape == (len(test),)
    assert torch.equal(pred, predict(model, test.images))
    with pytest.raises(ValueError, match="are not the classifier's classes"):
        label_histogram(model, test.images, [1, 2])


def test_save_load_round_trip(trained, digits, tmp_path):
    model, record = trained
    _, test = digits
    record = {**record, "test_accuracy": accuracy(model, test.images, test.labels)}
    path = tmp_path / "clf" / "classifier.pt"
    save_classifier(model, record, path)
    assert [p.name for p in path.parent.iterdir()] == ["classifier.pt"]  # atomic: no temporary left
    loaded, loaded_record = load_classifier(path)
    assert not loaded.training
    assert loaded_record == record
    assert loaded.spec() == model.spec()
    assert torch.equal(extract_features(loaded, test.images), extract_features(model, test.images))
    assert ClassifierConfig(**loaded_record["config"]) == QUICK


def test_load_rejects_other_files(trained, tmp_path):
    model, record = trained
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(InputFileError, match="notes.pt is not a classifier checkpoint"):
        load_classifier(text)
    other = tmp_path / "other.pt"
    save_torch({"format": "missingu.ema/1", "state_dict": {}}, other)
    with pytest.raises(InputFileError, match=r"other.pt is not a classifier checkpoint \(missingu.classifier/1"):
        load_classifier(other)
    with pytest.raises(InputFileError, match="does not exist"):
        load_classifier(tmp_path / "missing.pt")
    damaged = tmp_path / "damaged.pt"
    save_classifier(model, record, damaged)
    blob = torch.load(damaged, weights_only=True)
    del blob["state_dict"]["head.weight"]
    save_torch(blob, damaged)
    with pytest.raises(InputFileError, match="damaged.pt is not a classifier checkpoint.*damaged"):
        load_classifier(damaged)
    with pytest.raises(ValueError, match="record classes"):
        save_classifier(model, {**record, "classes": [0, 1]}, tmp_path / "x.pt")


def test_training_is_deterministic_and_keeps_label_values(digits):
    """Same seed, same weights; labels 100, 107, ..., 163 come back as those values."""
    train, test = digits
    labels = train.labels * 7 + 100
    config = ClassifierConfig(steps=15, batch_size=32, width=8, feature_dim=16, holdout=0.1)
    a, rec_a = train_classifier(train.images, labels, config, seed=3)
    b, rec_b = train_classifier(train.images, labels, config, seed=3)
    c, _ = train_classifier(train.images, labels, ClassifierConfig(steps=1, width=8, feature_dim=16), seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)
    assert rec_a == rec_b
    assert rec_a["classes"] == [100 + 7 * k for k in range(10)]
    assert set(predict(a, test.images).tolist()) <= set(rec_a["classes"])
    hist = label_histogram(a, test.images)
    assert list(hist) == rec_a["classes"] and sum(hist.values()) == len(test)
    with pytest.raises(ValueError, match=r"labels \[0, 1, 2.*not among the classifier's classes.*holdout_accuracy"):
        accuracy(a, test.images, test.labels)


def test_split_holdout_is_stratified_disjoint_and_seeded():
    labels = torch.tensor([5] * 50 + [9] * 20 + [2] * 1)
    train, held = split_holdout(labels, 0.1, seed=0)
    assert sorted(torch.cat([train, held]).tolist()) == list(range(71))
    assert labels[held].tolist().count(5) == 5 and labels[held].tolist().count(9) == 2
    assert 2 in labels[train].tolist()  # every class keeps a training image
    assert torch.equal(held, split_holdout(labels, 0.1, seed=0)[1])
    assert not torch.equal(held, split_holdout(labels, 0.1, seed=1)[1])
    assert split_holdout(labels, 0.0)[1].numel() == 0


def test_train_rejects_unlabelled_and_bad_data(digits):
    train, _ = digits
    images = train.images[:20]
    with pytest.raises(ValueError, match=r"no labels \(all -1\)"):
        train_classifier(images, torch.full((20,), -1), QUICK)
    with pytest.raises(ValueError, match="1 of 20 are negative"):
        train_classifier(images, torch.cat([torch.tensor([-1]), train.labels[1:20]]), QUICK)
    with pytest.raises(ValueError, match="at least two classes"):
        train_classifier(images, torch.zeros(20, dtype=torch.long), QUICK)
    with pytest.raises(ValueError, match="labels: expected shape"):
        train_classifier(images, train.labels[:19], QUICK)
    with pytest.raises(ValueError, match="expected uint8 images.*to_uint8"):
        train_classifier(images.float() / 127.5 - 1, train.labels[:20], QUICK)


@pytest.mark.parametrize("side,stages", [(8, 1), (12, 1), (16, 2), (32, 3), (64, 4), (128, 4)])
def test_network_handles_image_sizes(side, stages):
    assert downsampling_stages(side) == stages
    torch.manual_seed(0)
    model = SmallClassifier((3, side, side), [0, 4, 7], width=8, feature_dim=12)
    x = torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8)
    assert model(x).shape == (2, 3)
    assert model.features(x).shape == (2, 12)
    assert torch.equal(model.features(x), model.features(to_input(x)))
    assert to_input(x).min() >= -1 and to_input(x).max() <= 1
    with pytest.raises(ValueError, match=rf"trained on images of shape \(3, {side}, {side}\), got \(1, {side}, {side}\)"):
        model.features(x[:, :1])


def test_network_rejects_small_images_and_bad_classes():
    with pytest.raises(ValueError, match="H, W >= 8"):
        SmallClassifier((1, 7, 7), [0, 1])
    with pytest.raises(ValueError, match="at least two distinct non-negative labels"):
        SmallClassifier((1, 8, 8), [1, 0])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"steps": 0}, "steps: must be positive, got 0"),
        ({"batch_size": -1}, "batch_size: must be positive, got -1"),
        ({"lr": 0.0}, "lr: must be positive, got 0.0"),
        ({"width": 0}, "width: must be positive, got 0"),
        ({"feature_dim": 0}, "feature_dim: must be positive, got 0"),
        ({"holdout": 0.5}, r"holdout: must lie in \[0, 0.5\) \(the fraction of the train split kept out of training\), got 0.5"),
        ({"holdout": -0.1}, r"holdout: must lie in \[0, 0.5\)"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ClassifierConfig(**kwargs)


def test_config_from_yaml_data_names_the_key():
    assert build(ClassifierConfig, {"steps": 50, "holdout": 0.0}, "classifier") == ClassifierConfig(steps=50, holdout=0.0)
    with pytest.raises(ConfigError, match=r"classifier.holdout: must lie in \[0, 0.5\)"):
        build(ClassifierConfig, {"holdout": 0.7}, "classifier")
    with pytest.raises(ConfigError, match="classifier.depth: unknown key; allowed keys of classifier: batch_size, feature_dim, holdout, lr, steps, width"):
        build(ClassifierConfig, {"depth": 3}, "classifier")
