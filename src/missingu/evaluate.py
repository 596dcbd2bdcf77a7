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

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .classifier import (
    SmallClassifier,
    extract_features,
    label_histogram,
    split_holdout,
)
from .config import ConfigError, build
from .data import ImageSet
from .metrics.frechet import frechet_distance_features
from .specs.evaluate import INCEPTION_VALUES, SIDECARS, EvaluateConfig, work  # noqa: F401  (re-exported)
from .stats import fd_infinity
from .task import Result
from .weights import WeightsUnavailable


def classifier_reference(train: ImageSet, test: ImageSet, record: dict[str, Any]) -> tuple[Tensor, Tensor, str]:
    """Two halves of the real images the classifier never saw: the reference the classifier
    distance compares with, the real images its real-vs-real value is drawn from, and the
    reference's name. The unseen images are the test split when every test label is one of the
    classifier's classes, else the held-out part of the train split (the part the classifier was
    trained without: :func:`~missingu.classifier.split_holdout` with its seed); a generator seeded
    with the classifier's seed shuffles them and the first half is the reference. (Real images the
    classifier trained on would carry a train/test gap that a generator's images do not have.)"""
    classes = set(record["classes"])
    if len(test) and set(test.labels.tolist()) <= classes:
        unseen, name = test.images, "test split"
    else:
        if not record.get("holdout_images"):
            raise ConfigError(
                "evaluate.classifier.holdout: the test split's labels are not among the training classes, so the "
                "classifier distance needs a held-out part of the train split; set holdout above 0"
            )
        kept, held = split_holdout(train.labels, record["config"]["holdout"], 2 * record["seed"])
        unseen, name = train.images[held], "held-out train images"
    if len(unseen) < 4:
        raise ConfigError(f"the classifier distance needs at least 4 unseen real images ({name}); there are "
                          f"{len(unseen)}")
    order = torch.randperm(len(unseen), generator=torch.Generator().manual_seed(3 * int(record.get("seed", 0)) + 1))
    half = len(unseen) // 2
    return unseen[order[:half]], unseen[order[half:]], f"half of the {name}"


class QualityScorer:
    """Sample quality against one dataset, with what every evaluation shares computed once.

    The classifier distance's reference and the real images of its real-vs-real value (two halves
    of real images the classifier never saw, :func:`classifier_reference`) and their features, and
    FID's reference images are fixed at construction; a generator seeded with ``seed`` draws, in
    this order, the order of the real half (its first ``n`` images are the real-vs-real sample of
    ``n``) and the permutation of the train split (its first ``reference_images`` are FID's
    reference). ``missingu evaluate`` and the step-aware study score with it, so both report the
    same numbers for the same images; :meth:`score` also returns the features, cached beside the
    scores so intervals are resampled from them without running a network again."""

    def __init__(self, classifier: SmallClassifier | None, record: dict[str, Any] | None, train: ImageSet,
                 test: ImageSet, config: EvaluateConfig, *, torch_home: str | Path, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.classifier = None if classifier is None else classifier.to(device)
        self.config, self.torch_home, self.device = config, torch_home, device
        if classifier is None or record is None:  # FID only
            self.reference, self.real, self.reference_name = train.images[:0], train.images[:0], "none"
        else:
            self.reference, self.real, self.reference_name = classifier_reference(train, test, record)
        gen = torch.Generator().manual_seed(seed)
        self._real_order = torch.randperm(len(self.real), generator=gen)
        count = len(train) if config.reference_images is None else min(config.reference_images, len(train))
        self.fid_reference = train.images[torch.randperm(len(train), generator=gen)[:count]]
        self._features: dict[str, Tensor] = {}
        self._real_fd: dict[int, float] = {}

    def _cached(self, name: str, images: Tensor) -> Tensor:
        if self.classifier is None:
            raise ConfigError("the classifier distance needs the classifier of `missingu train-classifier` "
                              "(--classifier)")
        if name not in self._features:
            self._features[name] = extract_features(self.classifier, images.to(self.device))
        return self._features[name]

    def reference_features(self) -> Tensor:
        """The classifier's features of the reference images (computed once)."""
        return self._cached("reference", self.reference)

    def real_features(self) -> Tensor:
        """The classifier's features of the real half, in the order real-vs-real samples take them."""
        return self._cached("real", self.real[self._real_order])

    def sample_features(self, samples: Tensor) -> Tensor:
        """The classifier's features of uint8 ``samples``."""
        if self.classifier is None:
            self._cached("reference", self.reference)  # raises the error that names --classifier
        return extract_features(self.classifier, samples.to(self.device))

    def classifier_fd_real(self, n: int) -> float:
        """The same distance for ``n`` real images the classifier never saw (at most the real half):
        what an estimate from ``n`` images of the real distribution reads at this ``n``."""
        n = min(n, len(self.real))
        if n not in self._real_fd:
            self._real_fd[n] = frechet_distance_features(self.reference_features(), self.real_features()[:n])
        return self._real_fd[n]

    def fidelity(self, samples: Tensor) -> dict[str, Any]:
        """FID and KID (and the Inception score with ``isc``) of ``samples`` against FID's reference,
        with the Inception features (``features_generated``, ``features_reference``); raises
        :class:`~missingu.weights.WeightsUnavailable` when the Inception weights are not staged."""
        from .metrics.fid import fidelity_metrics

        return fidelity_metrics(samples, self.fid_reference, self.torch_home,
                                kid_subset_size=self.config.kid_subset_size, isc=self.config.isc, device=self.device)

    def reference_features_of(self, measure: str) -> Tensor | None:
        """The reference's features of ``measure``: the classifier's, or (after a FID was computed)
        Inception's; ``None`` before."""
        if measure == "classifier":
            return self.reference_features()
        return self._features.get("fid_reference")

    def quality_and_features(self, samples: Tensor, measure: str) -> tuple[float, Tensor]:
        """:meth:`quality` and the features it was computed from (classifier or Inception pool3)."""
        if measure == "classifier":
            features = self.sample_features(samples)
            return frechet_distance_features(self.reference_features(), features), features
        if measure == "fid":
            scores = self.fidelity(samples)
            self._features.setdefault("fid_reference", scores["features_reference"])
            return float(scores["fid"]), scores["features_generated"]
        raise ConfigError(f"quality measure {measure!r}: allowed: classifier, fid")

    def score(self, samples: Tensor) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Every score of uint8 ``samples`` (N, C, H, W) and the features behind them: the classifier
        distance, its bias-corrected value (:func:`missingu.stats.fd_infinity`) and the
        real-vs-real value at the same N, the label histogram, and FID/KID (``not computed: ...``
        text when switched off or the Inception weights are not staged). Features: ``samples``,
        ``reference`` and ``real`` (classifier, float32) and, with FID, ``fid_samples`` and
        ``fid_reference`` (Inception pool3, float16)."""
        classifier = self.classifier
        if classifier is None:
            raise ConfigError("missingu evaluate needs the classifier of `missingu train-classifier` (--classifier)")
        histogram = label_histogram(classifier, samples.to(self.device))
        features = {"samples": self.sample_features(samples), "reference": self.reference_features(),
                    "real": self.real_features()}
        out: dict[str, Any] = {
            "classifier_fd": frechet_distance_features(features["reference"], features["samples"]),
            "classifier_fd_inf": fd_infinity(features["reference"], features["samples"]),
            "classifier_fd_real": self.classifier_fd_real(len(samples)),
            "classifier_fd_real_images": min(len(samples), len(self.real)),
            "classifier_reference": self.reference_name, "classifier_reference_images": len(self.reference),
            "label_histogram": {str(k): int(v) for k, v in histogram.items()},
            "classes_covered": sum(1 for v in histogram.values() if v > 0), "num_classes": len(histogram),
        }
        notes = {"fid": None}
        if not self.config.fid:
            notes["fid"] = "not computed: evaluate.fid is false"
        else:
            try:
                scores = self.fidelity(samples)
            except WeightsUnavailable as err:
                notes["fid"] = str(err)
            else:
                features["fid_samples"] = scores.pop("features_generated").half()
                features["fid_reference"] = scores.pop("features_reference").half()
                out.update(scores)
        for key in ("fid", "kid_mean", "kid_std"):
            out.setdefault(key, notes["fid"])
        if self.config.isc:
            for key in ("isc_mean", "isc_std"):
                out.setdefault(key, notes["fid"])
        out["notes"] = notes
        return out, features


def run(samples: Tensor, summary: dict[str, Any], meta: dict[str, Any], scorer: QualityScorer,
        classifier_record: dict[str, Any]) -> Result:
    """The evaluation of one set of uint8 ``samples`` as a :class:`~missingu.task.Result`: no rows;
    the record holds the model (``meta``: the checkpoint's, and the preset its config is), the
    sampler and its cost from the sampling ``summary``, the classifier's accuracy and every score of
    :meth:`QualityScorer.score`; file ``features`` holds the features the scores were computed from."""
    from .models import preset_name
    from .samplers import SamplerSpec, sampler_steps

    start = time.perf_counter()
    scores, features = scorer.score(samples)
    sampler = summary["sampler"]
    accuracy = classifier_record.get("test_accuracy")
    record = {
        "dataset": meta.get("dataset"), "model": meta.get("model_name"), "arch": meta.get("arch"),
        "preset": preset_name(meta.get("arch"), meta.get("model")), "sampler": sampler["name"], "kind": sampler["kind"],
        "steps": sampler_steps(build(SamplerSpec, sampler, "sampler"), meta.get("diffusion", {}).get("timesteps")),
        "network_calls": summary["network_calls_per_batch"], "num_samples": summary["num_samples"],
        "seconds_per_image": summary["seconds"] / summary["num_samples"], "device": summary["device"],
        "classifier_accuracy": accuracy if accuracy is not None else classifier_record.get("holdout_accuracy"),
        **scores, "evaluate_seconds": time.perf_counter() - start, "evaluate_device": str(scorer.device),
    }
    return Result(rows=[], record=record, files={"features": features})
