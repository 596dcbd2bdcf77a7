"""The quality stage's classifier: its training settings and work (:mod:`missingu.classifier`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, positive
from ..task import Work, image_values

# The file `missingu train-classifier` writes beside the classifier (missingu.io.sidecars).
SIDECARS = {"record": ".json"}


@dataclass(frozen=True)
class ClassifierConfig:
    """Training settings of :func:`train_classifier`.

    ``steps`` optimizer steps on batches of ``batch_size`` training images drawn uniformly with
    replacement; AdamW at ``lr`` with cosine decay to 0; ``width`` channels in the first block
    (doubled, up to 4x, by the downsampling stages); ``feature_dim`` penultimate features (the
    Frechet distance's space). ``holdout`` is the fraction of each class of the train split kept
    out of training, to report accuracy on (``holdout_accuracy``): the test split is no check when
    its labels are not among the training labels (``photos``: other photos); 0 trains on all.
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    feature_dim: int = 64
    holdout: float = 0.1

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "lr", "width", "feature_dim"):
            positive(getattr(self, key), key)
        if not 0 <= self.holdout < 0.5:
            raise ConfigError(
                f"holdout: must lie in [0, 0.5) (the fraction of the train split kept out of training), "
                f"got {self.holdout!r}"
            )


def work(config: ClassifierConfig, shape: tuple[int, int, int]) -> Work:
    """Training the classifier: ``steps x batch_size`` images through a training step."""
    return Work(train_values=float(config.steps * config.batch_size * image_values(shape)))
