"""Datasets: the embedded digits and photos, and clear errors for missing downloads."""

from __future__ import annotations

import pytest
import torch

from missingu.data import (
    PHOTOS,
    PHOTOS_TEST,
    PHOTOS_TEST_CROPS,
    PHOTOS_TRAIN_CROPS,
    SOURCES,
    DatasetSpec,
    DatasetUnavailable,
    ImageSet,
    load_imageset,
    save_imageset,
    to_model_range,
)
from missingu.experiment import parse_experiment


def test_digits_split_is_deterministic_disjoint_and_complete():
    spec = DatasetSpec(name="digits")
    train, test = spec.load("train"), spec.load("test")
    assert len(train) + len(test) == 1797
    assert len(test) == 359
    assert train.images.dtype == torch.uint8 and train.shape == (1, 16, 16)
    assert set(train.labels.tolist()) == set(range(10))
    again = spec.load("train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    flat_train = {tuple(x.flatten().tolist()) for x in train.images}
    overlap = sum(tuple(x.flatten().tolist()) in flat_train for x in test.images)
    assert overlap < 10  # identical digits can occur twice in the data, a few at most


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_resize_and_model_range(size):
    data = DatasetSpec(name="digits", image_size=size, max_images=50).load()
    assert data.shape == (1, size, size) and len(data) == 50
    x = to_model_range(data.images)
    assert x.min().item() == -1.0 and 0.5 < x.max().item() <= 1.0


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("mnist", "train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-python.tar.gz"),
        ("celeba", "img_align_celeba/"),
        ("lsun_church", "church_outdoor_train_lmdb"),
    ],
)
def test_missing_dataset_says_what_to_stage(tmp_path, source, hint):
    spec = DatasetSpec(name=source, root=str(tmp_path), download=False)
    with pytest.raises(DatasetUnavailable) as err:
        spec.load("train")
    assert hint in str(err.value) and str(tmp_path / source) in str(err.value)


def test_registry_channels_and_sizes():
    assert {k: (v.channels, v.default_size) for k, v in SOURCES.items()} == {
        "digits": (1, 16), "mnist": (1, 32), "cifar10": (3, 32), "celeba": (3, 64), "lsun_church": (3, 64),
        "photos": (3, 32),
    }


def test_prepared_file_round_trip(tmp_path):
    data = DatasetSpec(name="digits", max_images=10).load()
    save_imageset(data, tmp_path / "d.pt", dataset="digits")
    back = load_imageset(tmp_path / "d.pt")
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels)
    with pytest.raises(FileNotFoundError, match="prepare-data"):
        load_imageset(tmp_path / "missing.pt")


def test_train_split_size_of_the_embedded_dataset_is_the_registered_one():
    spec = DatasetSpec(name="digits")
    assert len(spec.load("train")) == SOURCES["digits"].train_images
    assert spec.train_bytes == SOURCES["digits"].train_images * 16 * 16
    assert DatasetSpec(name="celeba", max_images=10).train_bytes == 10 * 3 * 64 * 64


@pytest.fixture(scope="module")
def photos() -> dict[str, ImageSet]:
    """Both splits of ``photos`` at its default size, prepared once (about 2 s)."""
    spec = DatasetSpec(name="photos")
    return {split: spec.load(split) for split in ("train", "test")}


def test_photos_shapes_counts_and_registry(photos):
    assert len(photos["train"]) == PHOTOS_TRAIN_CROPS == SOURCES["photos"].train_images
    assert len(photos["test"]) == PHOTOS_TEST_CROPS
    for data in photos.values():
        assert data.images.dtype == torch.uint8 and data.shape == (3, 32, 32)
        assert data.labels.dtype == torch.int64 and data.labels.shape == (len(data),)
    assert DatasetSpec(name="photos").train_bytes == PHOTOS_TRAIN_CROPS * 3 * 32 * 32


def test_photos_split_by_photo_with_exact_balance(photos):
    test_labels = {PHOTOS.index(name) for name in PHOTOS_TEST}
    assert set(photos["test"].labels.tolist()) == test_labels
    assert set(photos["train"].labels.tolist()) == set(range(len(PHOTOS))) - test_labels
    for data in photos.values():
        counts = torch.bincount(data.labels, minlength=len(PHOTOS))
        used = counts[counts > 0]
        assert (used == len(data) // len(used)).all()
    # round-robin: a prefix (max_images) is as balanced as it can be
    first = torch.bincount(photos["train"].labels[:100], minlength=len(PHOTOS))
    assert first.max() - first[first > 0].min() <= 1


def test_photos_crops_vary(photos):
    for data in photos.values():
        flat = data.images.flatten(1)
        # alike only by chance: a few small crops of retina's black corners are all black
        assert len({tuple(x.tolist()) for x in flat}) >= 0.99 * len(data)
        assert flat.float().std(0).mean() > 20  # not near-copies either
        assert flat.float().std(1).mean() > 5  # crops show structure, not flat colour


def test_photos_are_deterministic_and_leave_global_state_alone(photos):
    spec = DatasetSpec(name="photos")
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = spec.load("test")
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert torch.equal(again.images, photos["test"].images) and torch.equal(again.labels, photos["test"].labels)


def test_photos_at_64():
    data = DatasetSpec(name="photos", image_size=64, max_images=40).load("test")
    assert data.shape == (3, 64, 64) and len(data) == 40
    x = to_model_range(data.images)
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0 and x.std().item() > 0.1


def test_photos_entry_parses_through_the_config(tiny_config):
    tiny_config["datasets"] = [{"name": "photos"}, {"name": "photos64", "source": "photos", "image_size": 64}]
    cfg = parse_experiment(tiny_config)
    (default, big) = cfg.datasets
    assert (default.source_name, default.channels, default.size) == ("photos", 3, 32)
    assert (big.source_name, big.channels, big.size) == ("photos", 3, 64)


def test_every_source_has_a_loader():
    from missingu.data import LOADERS

    assert set(LOADERS) == set(SOURCES)
