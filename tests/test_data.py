"""Datasets: the embedded digits and clear errors for missing downloads."""

from __future__ import annotations

import pytest
import torch

from missingu.data import SOURCES, DatasetSpec, DatasetUnavailable, load_imageset, save_imageset, to_model_range


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
