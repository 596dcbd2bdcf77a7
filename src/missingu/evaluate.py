"""Sample quality of generated images: FID/KID (torch-fidelity, Inception weights staged) and the
classifier Frechet distance (a small classifier trained here, so it needs no download).

The classifier distance compares generated images with real images the classifier was not
trained on: the dataset's test split when its labels are among the training classes (digits,
MNIST, CIFAR-10), else the classifier's held-out part of the train split (``photos``, whose test
crops come from other photos). Beside it: the distance between as many *real* training images
and the same reference, the floor an estimate from that many images reaches, and the
classifier's label histogram of the generated images (mode coverage). FID compares with the
train split (the usual reference; ``reference_images`` of them, a seeded random subset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .classifier import (
    ClassifierConfig,
    SmallClassifier,
    classifier_frechet_distance,
    label_histogram,
    split_holdout,
)
from .config import ConfigError, positive
from .data import ImageSet
from .weights import WeightsUnavailable


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


def classifier_reference(train: ImageSet, test: ImageSet, record: dict[str, Any]) -> tuple[Tensor, Tensor, str]:
    """The real images the classifier distance compares with, the real training images the floor
    is measured from, and the reference's name: the test split when every test label is one of
    the classifier's classes, else the held-out part of the train split (the same split the
    classifier was trained without: :func:`~missingu.classifier.split_holdout` with its seed)."""
    classes = set(record["classes"])
    if len(test) and set(test.labels.tolist()) <= classes:
        return test.images, train.images, "test split"
    if not record.get("holdout_images"):
        raise ConfigError(
            "evaluate.classifier.holdout: the test split's labels are not among the training classes, so the "
            "classifier distance needs a held-out part of the train split; set holdout above 0"
        )
    kept, held = split_holdout(train.labels, record["config"]["holdout"], 2 * record["seed"])
    return train.images[held], train.images[kept], "held-out train images"


def evaluate_samples(
    samples: Tensor,
    train: ImageSet,
    test: ImageSet,
    classifier: SmallClassifier,
    record: dict[str, Any],
    config: EvaluateConfig,
    *,
    torch_home: str | Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Quality of uint8 ``samples`` (N, C, H, W): the classifier distance to the reference (and the
    real-vs-real floor at the same N), the label histogram, and FID/KID (``not computed: ...``
    text when switched off or the Inception weights are not staged)."""
    n = len(samples)
    reference, pool, reference_name = classifier_reference(train, test, record)
    gen = torch.Generator().manual_seed(seed)
    real = pool[torch.randperm(len(pool), generator=gen)[: min(n, len(pool))]]
    classifier = classifier.to(device)
    histogram = label_histogram(classifier, samples.to(device))
    out: dict[str, Any] = {
        "classifier_fd": classifier_frechet_distance(classifier, reference.to(device), samples.to(device)),
        "classifier_fd_real": classifier_frechet_distance(classifier, reference.to(device), real.to(device)),
        "classifier_reference": reference_name, "classifier_reference_images": len(reference),
        "label_histogram": {str(k): int(v) for k, v in histogram.items()},
        "classes_covered": sum(1 for v in histogram.values() if v > 0), "num_classes": len(histogram),
    }
    notes = {"fid": None}
    if not config.fid:
        notes["fid"] = "not computed: evaluate.fid is false"
    else:
        from .metrics.fid import fidelity_metrics

        count = len(train) if config.reference_images is None else min(config.reference_images, len(train))
        chosen = train.images[torch.randperm(len(train), generator=gen)[:count]]
        try:
            scores = fidelity_metrics(samples, chosen, torch_home, kid_subset_size=config.kid_subset_size,
                                      isc=config.isc, device=device)
        except WeightsUnavailable as err:
            notes["fid"] = str(err)
        else:
            out.update(scores)
    for key in ("fid", "kid_mean", "kid_std"):
        out.setdefault(key, notes["fid"])
    if config.isc:
        for key in ("isc_mean", "isc_std"):
            out.setdefault(key, notes["fid"])
    out["notes"] = notes
    return out
