"""A dataset entry of a config and what is known of each source before loading it: image
channels, native size and the number of training images (the pipeline sizes memory by them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..config import choose, entry_name, positive

if TYPE_CHECKING:
    from ..data import ImageSet

Split = Literal["train", "test"]

#: The photos of ``photos``, by their ``skimage.data`` names (``stereo_motorcycle`` is the left
#: view of that stereo pair); a crop's label is its photo's index here.
PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "retina",
    "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle",
)
#: Held out for the test split. Both are everyday camera photographs of one close subject, like
#: astronaut, coffee and rocket in training, but of content no training photo shows: chelsea is an
#: animal (a cat's fur and face, indoors), stereo_motorcycle a machine (painted and chrome metal,
#: cables, a cluttered room). The microscopy and telescope images (retina, immunohistochemistry,
#: hubble_deep_field) stay in training: they have no counterpart to test on.
PHOTOS_TEST: tuple[str, ...] = ("chelsea", "stereo_motorcycle")
PHOTOS_TRAIN: tuple[str, ...] = tuple(name for name in PHOTOS if name not in PHOTOS_TEST)
#: Crops per split: a multiple of the split's photos (834 per training photo, 250 per test photo).
PHOTOS_TRAIN_CROPS = 5_004
PHOTOS_TEST_CROPS = 500


class DatasetUnavailable(RuntimeError):
    """A dataset's files are missing and could not be downloaded; the message says what to stage."""


@dataclass(frozen=True)
class DataSource:
    """A dataset's image channels, native size and number of training images (what the pipeline
    sizes its jobs' memory by); :data:`missingu.data.LOADERS` reads it."""

    channels: int
    default_size: int
    train_images: int


SOURCES: dict[str, DataSource] = {
    "digits": DataSource(1, 16, 1438),
    "mnist": DataSource(1, 32, 60_000),
    "cifar10": DataSource(3, 32, 50_000),
    "celeba": DataSource(3, 64, 162_770),
    "lsun_church": DataSource(3, 64, 126_227),
    "photos": DataSource(3, 32, PHOTOS_TRAIN_CROPS),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset entry of a config. ``source`` is the loader (defaults to ``name``);
    ``image_size`` defaults to the source's native size; downloads go to ``<root>/<name>``;
    ``hflip`` makes training flip half the images left-right (faces, churches; not digits);
    ``max_images`` keeps the first images of a split (quick experiments)."""

    name: str
    source: str | None = None
    image_size: int | None = None
    root: str = "resources"
    download: bool = True
    hflip: bool = False
    max_images: int | None = None

    def __post_init__(self) -> None:
        entry_name(self.name)
        choose(SOURCES, self.source_name, "dataset", "source" if self.source else "name")
        if self.image_size is not None:
            positive(self.image_size, "image_size")
        if self.max_images is not None:
            positive(self.max_images, "max_images")

    @property
    def source_name(self) -> str:
        return self.source or self.name

    @property
    def channels(self) -> int:
        return SOURCES[self.source_name].channels

    @property
    def size(self) -> int:
        return self.image_size or SOURCES[self.source_name].default_size

    @property
    def train_bytes(self) -> int:
        """Size of the prepared training split (uint8 images)."""
        count = SOURCES[self.source_name].train_images
        if self.max_images is not None:
            count = min(count, self.max_images)
        return count * self.channels * self.size * self.size

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.source_name

    def load(self, split: Split = "train") -> ImageSet:
        """Read (and if allowed download) one split."""
        from ..data import load_split  # the loaders need torch; a config is read without it

        return load_split(self, split)
