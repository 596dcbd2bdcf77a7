"""What ``missingu evaluate`` computes, the files it writes and its work (:mod:`missingu.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import positive
from ..task import Work, image_values
from .classifier import ClassifierConfig


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``missingu evaluate`` computes: FID and KID (``fid``; needs the Inception weights),
    the Inception score (``isc``: meaningful for natural multi-class images such as CIFAR-10),
    KID's subset size (reduced to the number of images when larger), how many training images
    are FID's reference (``reference_images``; ``null``: all) and the classifier's training."""

    fid: bool = True
    isc: bool = False
    kid_subset_size: int = 1000
    reference_images: int | None = 10000
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        positive(self.kid_subset_size, "kid_subset_size")
        if self.reference_images is not None:
            positive(self.reference_images, "reference_images")


# Files `missingu evaluate` writes beside its record (missingu.io.sidecars).
SIDECARS = {"features": ".features.pt"}

# Values of one Inception input (3 x 299 x 299): FID resizes every image to it.
INCEPTION_VALUES = 3 * 299 * 299


def work(config: EvaluateConfig, num_samples: int, shape: tuple[int, int, int]) -> Work:
    """Evaluating ``num_samples`` images: the classifier's features of them, of as many real images
    and of a reference of about that size; with ``fid``, Inception on them and on FID's reference."""
    out = Work(forward_values=float(3 * num_samples * image_values(shape)))
    if config.fid:
        reference = 10_000 if config.reference_images is None else config.reference_images
        out = out + Work(forward_values=float((num_samples + reference) * INCEPTION_VALUES))
    return out
