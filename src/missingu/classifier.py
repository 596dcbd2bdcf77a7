"""A small image classifier trained on a dataset's train split, for sample-quality measures that
need no download:

* the **classifier Frechet distance**: the Frechet distance (:mod:`missingu.metrics.frechet`)
  between Gaussians fitted to the classifier's penultimate features of real test images and of
  generated images. It is FID's construction with a dataset-specific network in place of
  Inception, so its values are comparable only between runs that use the same classifier file,
  never with published FIDs.
* the **label histogram** of generated images: how many samples the classifier assigns to each
  training class; a class with (near) zero count is a dropped mode.

Images are uint8 (N, C, H, W) as :class:`missingu.data.ImageSet` holds them; generated images in
[-1, 1] become uint8 with :func:`missingu.data.to_uint8` first. Labels may be any non-negative
integers (digits 0..9, ``photos``' photo indices): the classifier's outputs are the sorted distinct
training labels (``classes``), and :func:`predict` returns those values, not indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from . import __version__
from .config import positive, to_dict
from .data import to_model_range
from .io import InputFileError, load_torch, save_torch
from .metrics.frechet import frechet_distance_features
from .specs.classifier import SIDECARS, ClassifierConfig, work  # noqa: F401  (re-exported)

CLASSIFIER_FORMAT = "missingu.classifier/1"
#: Smallest image side the network accepts (one stride-2 stage down to 4x4).
MIN_SIDE = 8
#: Decoupled weight decay of AdamW (fixed; not worth a config key).
WEIGHT_DECAY = 1e-2


def to_input(images: Tensor) -> Tensor:
    """uint8 images (N, C, H, W) in [0, 255] -> float32 ``x = images / 127.5 - 1`` in [-1, 1];
    anything else raises ``ValueError`` (convert float images with ``missingu.data.to_uint8``)."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        what = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else (
            type(images).__name__)
        raise ValueError(
            f"expected uint8 images (N, C, H, W), got a {what}; convert images in [-1, 1] with "
            f"missingu.data.to_uint8"
        )
    return to_model_range(images)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), _norm(c_out), nn.ReLU()]


def downsampling_stages(side: int) -> int:
    """Stride-2 stages for images whose short side is ``side``: ``1 + floor(log2(side / 8))``,
    at most 4 (8 px: 1, 16: 2, 32: 3, 64 and more: 4), so that 8-64 px images end at 4x4."""
    return min(4, 1 + int(math.floor(math.log2(side / MIN_SIDE))))


class SmallClassifier(nn.Module):
    """Conv net for (C, H, W) images with ``min(H, W) >= 8``.

    A 3x3 conv block (conv, GroupNorm, ReLU) with ``width`` channels at full resolution, then
    :func:`downsampling_stages` stages of two blocks each (the first with stride 2; channels
    ``width * 2^min(k, 2)`` at stage ``k = 1, 2, ...``), global average pooling, the penultimate
    layer ``f = ReLU(W_f pool + b_f)`` of ``feature_dim`` units and the linear head
    ``logits = W_h f + b_h`` over ``len(classes)`` classes. ``classes`` (a buffer, saved with the
    weights) are the label values of the outputs, sorted.

    ``forward`` and ``features`` take uint8 images (mapped by :func:`to_input`) or float images
    already in [-1, 1]; the shape must be ``image_shape``.
    """

    def __init__(self, image_shape: Sequence[int], classes: Sequence[int], width: int = 32, feature_dim: int = 64):
        super().__init__()
        if len(image_shape) != 3 or min(image_shape[1:]) < MIN_SIDE:
            raise ValueError(f"image_shape: expected (C, H, W) with H, W >= {MIN_SIDE}, got {tuple(image_shape)}")
        classes = [int(c) for c in classes]
        if len(classes) < 2 or classes != sorted(set(classes)) or classes[0] < 0:
            raise ValueError(f"classes: expected at least two distinct non-negative labels, sorted, got {classes}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.width, self.feature_dim = int(width), int(feature_dim)
        self.register_buffer("classes", torch.tensor(classes, dtype=torch.long))
        layers = _block(self.image_shape[0], width, 1)
        channels = width
        for k in range(1, downsampling_stages(min(self.image_shape[1:])) + 1):
            out = width * 2 ** min(k, 2)
            layers += _block(channels, out, 2) + _block(out, out, 1)
            channels = out
        self.body = nn.Sequential(*layers)
        self.penultimate = nn.Linear(channels, feature_dim)
        self.head = nn.Linear(feature_dim, len(classes))

    @property
    def num_classes(self) -> int:
        return self.classes.numel()

    def spec(self) -> dict[str, Any]:
        """The constructor's arguments as plain data (what rebuilds the network)."""
        return {"image_shape": list(self.image_shape), "classes": self.classes.tolist(), "width": self.width,
                "feature_dim": self.feature_dim}

    def _prepare(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = to_input(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"the classifier was trained on images of shape {self.image_shape}, got {tuple(x.shape[1:])}"
            )
        return x.to(self.classes.device, torch.float32)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``f`` (N, feature_dim)."""
        h = self.body(self._prepare(x)).mean(dim=(2, 3))
        return F.relu(self.penultimate(h))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) over :attr:`classes`."""
        return self.head(self.features(x))


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for a while; the previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batched(model: SmallClassifier, images: Tensor, batch_size: int, fn: str) -> Tensor:
    """``getattr(model, fn)`` over uint8 ``images`` in batches, in eval mode without gradients,
    gathered on the CPU as float32."""
    to_input(images[:0])  # type check before any work
    positive(batch_size, "batch_size")
    if images.shape[0] == 0:
        raise ValueError("images: empty")
    out = []
    with _evaluating(model):
        for start in range(0, images.shape[0], batch_size):
            out.append(getattr(model, fn)(images[start : start + batch_size]).float().cpu())
    return torch.cat(out)


def extract_features(model: SmallClassifier, images: Tensor, batch_size: int = 256) -> Tensor:
    """Penultimate features (N, feature_dim), float32 on the CPU, of uint8 images."""
    return _batched(model, images, batch_size, "features")


def predict(model: SmallClassifier, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted label values (N,) int64: ``classes[argmax_k logits_k]``."""
    logits = _batched(model, images, batch_size, "forward")
    return model.classes.cpu()[logits.argmax(dim=1)]


def _check_classes(model: SmallClassifier, classes: Sequence[int] | Tensor | None) -> list[int]:
    own = model.classes.tolist()
    if classes is None:
        return own
    given = [int(c) for c in classes]
    if sorted(set(given)) != own:
        raise ValueError(f"classes {given} are not the classifier's classes {own}")
    return own


def accuracy(
    model: SmallClassifier, images: Tensor, labels: Tensor, classes: Sequence[int] | Tensor | None = None,
    batch_size: int = 256,
) -> float:
    """Fraction of images whose predicted label equals ``labels``: ``(1/N) sum_i [pred_i = y_i]``.

    ``classes`` (default: the model's own, which it stores) must be the classifier's classes.
    Labels outside them raise ``ValueError``: such a split (``photos``' test photos) has no
    accuracy; report the training record's ``holdout_accuracy`` instead.
    """
    _check_classes(model, classes)
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")
    unknown = sorted(set(labels.unique().tolist()) - set(model.classes.tolist()))
    if unknown:
        raise ValueError(
            f"labels {unknown} are not among the classifier's classes {model.classes.tolist()}: no accuracy on "
            f"these images (a test split of other labels, as for photos: use the record's holdout_accuracy)"
        )
    return float((predict(model, images, batch_size) == labels).double().mean())


def label_histogram(
    model: SmallClassifier, images: Tensor, classes: Sequence[int] | Tensor | None = None, batch_size: int = 256
) -> dict[int, int]:
    """How many images the classifier assigns to each class: ``{c: #{i : pred_i = c}}`` for every
    class ``c`` (default: the model's classes), zeros included; the counts sum to N."""
    keys = _check_classes(model, classes)
    counts = dict.fromkeys(keys, 0)
    values, numbers = predict(model, images, batch_size).unique(return_counts=True)
    for value, number in zip(values.tolist(), numbers.tolist()):
        counts[value] += number
    return counts


def classifier_frechet_distance(model: SmallClassifier, real: Tensor, fake: Tensor, batch_size: int = 256) -> float:
    """Frechet distance between Gaussians fitted to the penultimate features of uint8 ``real``
    and ``fake`` images: ``||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^(1/2))``
    (:func:`missingu.metrics.frechet.frechet_distance`). Biased upwards for finite samples:
    compare values computed with the same numbers of images."""
    return frechet_distance_features(
        extract_features(model, real, batch_size), extract_features(model, fake, batch_size)
    )


def split_holdout(labels: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(train_indices, holdout_indices)``, each sorted: from every class with ``n_c`` images,
    ``min(round(fraction * n_c), n_c - 1)`` chosen uniformly at random (a generator seeded with
    ``seed``) are held out, so every class keeps at least one training image."""
    labels = torch.as_tensor(labels).long().cpu()
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        k = min(round(fraction * members.numel()), members.numel() - 1)
        held.append(members[torch.randperm(members.numel(), generator=g)[:k]])
    holdout = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.long)
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[holdout] = False
    return mask.nonzero().flatten(), holdout


def train_classifier(
    images: Tensor,
    labels: Tensor,
    config: ClassifierConfig | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[SmallClassifier, dict[str, Any]]:
    """Train a :class:`SmallClassifier` on uint8 ``images`` (N, C, H, W) with labels (N,).

    Minimises the cross-entropy ``-(1/B) sum_i log softmax(logits_i)[y_i]`` with AdamW (weight
    decay :data:`WEIGHT_DECAY`), learning rate ``lr * (1 + cos(pi t / steps)) / 2`` at step ``t``.
    No augmentation: labels may depend on orientation (no flips). Labels are any non-negative
    integers; they map to class indices by their rank among the sorted distinct labels
    (``record["classes"]``). A dataset without labels (all -1) or with some negative labels, or
    with a single class, raises ``ValueError``.

    :func:`split_holdout` keeps ``config.holdout`` of every class out of training. Deterministic
    given ``seed``: ``torch.manual_seed(seed)`` initialises the weights, a CPU generator seeded
    ``2 seed`` splits the holdout and one seeded ``2 seed + 1`` draws the batches; identical
    weights on the CPU (tested), on CUDA up to cuDNN's nondeterministic convolution kernels.

    Returns the model in eval mode and a record (plain data): ``classes``, ``num_classes``,
    ``steps``, ``seed``, ``config``, ``image_shape``, ``train_images``, ``holdout_images``,
    ``train_accuracy`` (on the images trained on), ``holdout_accuracy`` (``None`` without a
    holdout) and ``final_loss`` (mean over the last 10% of steps). Add a ``test_accuracy`` (see
    :func:`accuracy`) before :func:`save_classifier` where the test labels are training classes.
    """
    config = config or ClassifierConfig()
    to_input(images[:0])
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() == 0 or bool((labels < 0).all()):
        raise ValueError(
            "the dataset has no labels (all -1): a classifier needs labelled images (digits, mnist, cifar10, "
            "photos; not celeba or lsun_church)"
        )
    if bool((labels < 0).any()):
        raise ValueError(f"labels: {int((labels < 0).sum())} of {labels.numel()} are negative; expected labels >= 0")
    classes = labels.unique()  # sorted
    if classes.numel() < 2:
        raise ValueError(f"labels: a classifier needs at least two classes, got only {classes.tolist()}")
    targets = torch.searchsorted(classes, labels)
    train_idx, holdout_idx = split_holdout(labels, config.holdout, seed=2 * seed)

    device = torch.device(device)
    torch.manual_seed(seed)
    model = SmallClassifier(images.shape[1:], classes.tolist(), config.width, config.feature_dim).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=WEIGHT_DECAY)
    g = torch.Generator().manual_seed(2 * seed + 1)
    images = images.cpu()
    tail = max(1, config.steps // 10)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(config.steps), desc="train classifier", unit="step", disable=not progress, mininterval=2.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = config.lr * (1 + math.cos(math.pi * step / config.steps)) / 2
        idx = train_idx[torch.randint(0, train_idx.numel(), (config.batch_size,), generator=g)]
        x = to_input(images[idx]).to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), targets[idx].to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= config.steps - tail:
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    model.eval()
    record: dict[str, Any] = {
        "classes": classes.tolist(),
        "num_classes": classes.numel(),
        "steps": config.steps,
        "seed": seed,
        "config": to_dict(config),
        "image_shape": list(model.image_shape),
        "train_images": train_idx.numel(),
        "holdout_images": holdout_idx.numel(),
        "train_accuracy": accuracy(model, images[train_idx], labels[train_idx]),
        "holdout_accuracy": (accuracy(model, images[holdout_idx], labels[holdout_idx])
                             if holdout_idx.numel() else None),
        "final_loss": sum(losses) / len(losses),
    }
    return model, record


def save_classifier(model: SmallClassifier, record: dict[str, Any], path: str | Path) -> None:
    """Write the weights, the network's spec (image shape, classes, width, feature_dim) and
    ``record`` (plain data: config, accuracies, ...) to ``path`` atomically. A record whose
    ``classes`` differ from the model's raises ``ValueError``."""
    if "classes" in record and [int(c) for c in record["classes"]] != model.classes.tolist():
        raise ValueError(f"record classes {record['classes']} are not the model's {model.classes.tolist()}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(
        {"format": CLASSIFIER_FORMAT, "version": __version__, "model": model.spec(), "state_dict": state,
         "record": dict(record)},
        path,
    )


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[SmallClassifier, dict[str, Any]]:
    """Read a file written by :func:`save_classifier`: ``(model in eval mode, record)``. A missing
    file, another kind of file or a damaged checkpoint raises :class:`InputFileError` naming it."""
    what = f"a classifier checkpoint ({CLASSIFIER_FORMAT}, written by missingu.classifier.save_classifier)"
    blob = load_torch(path, what=what)
    if not isinstance(blob, dict) or blob.get("format") != CLASSIFIER_FORMAT:
        raise InputFileError(f"{path} is not {what}")
    try:
        model = SmallClassifier(**blob["model"])
        model.load_state_dict(blob["state_dict"])
        record = dict(blob["record"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputFileError(f"{path} is not {what}: it is damaged ({first})") from None
    return model.to(device).eval(), record
