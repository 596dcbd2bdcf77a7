"""Distribution-level metrics of generated images against reference images: FID, KID and (optionally)
the Inception Score, computed by torch-fidelity with its port of the TF Inception-v3 (2015-12-05) graph.

* **FID** (Heusel et al. 2017): with ``mu1, C1`` and ``mu2, C2`` the mean and covariance of the Inception
  pool3 features (2048-d, after the final average pool) of the generated and reference images,
  ``FID = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))``. torch-fidelity takes the trace of the square
  root as the sum of the square roots of the eigenvalues of ``C1 C2`` (numpy's general eigensolver on a
  2048 x 2048 matrix, seconds on a CPU); round-off can leave a set against itself slightly below 0.
* **KID** (Binkowski et al. 2018): the unbiased estimate of the squared MMD between the two feature sets
  with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` (``d = 2048``), averaged over random
  subsets of ``kid_subset_size`` images from each set (torch-fidelity draws 100 subsets, seed 2020);
  ``kid_std`` is the standard deviation over those subsets. Being unbiased, it can come out negative;
  against the very same images it is <= 0 (the within-set terms skip ``k(x, x)``, the cross term not).
* **Inception Score** (Salimans et al. 2016), of the generated set only: ``exp(E_x KL(p(y|x) || p(y)))``
  on the 1008-way logits (without the final bias: torch-fidelity's ``logits_unbiased``), averaged over
  splits of the set.

FID is a biased estimator: with few samples it is biased upwards (its expectation decreases as the
number of images grows), so FIDs are comparable only between runs with the same numbers of images, and
with fewer than 2049 images the covariances are singular. KID is unbiased but noisy on small sets.

The pool3 features of both sets are returned with the metrics (:func:`fidelity_metrics`), so FID can be
recomputed (e.g. bootstrapped over resampled images) without running Inception again.

The Inception file (``weights-inception-2015-12-05-6726825d.pth``) must be staged in
``<torch_home>/hub/checkpoints`` (:mod:`missingu.weights`); it is never downloaded here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..weights import require_weights

# torch-fidelity's defaults for a full-size evaluation, reduced when the sets are smaller.
KID_SUBSET_SIZE = 1000
ISC_SPLITS = 10

# torch-fidelity's default feature extractor for FID/KID/IS (utils.DEFAULT_FEATURE_EXTRACTOR) and its layers
# for them (FeatureExtractorInceptionV3.get_default_feature_layer_for_metric): what calculate_metrics uses.
FEATURE_EXTRACTOR = "inception-v3-compat"
POOL3 = "2048"  # FID and KID: the 2048-d pool3 features
LOGITS = "logits_unbiased"  # IS: the 1008 logits without the final bias

# torch-fidelity's result keys (torch_fidelity.KEY_METRIC_*), mapped to ours.
_KEYS = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "inception_score_mean": "isc_mean",
    "inception_score_std": "isc_std",
}


class ImageTensorDataset(Dataset):
    """The images of a uint8 (N, C, H, W) tensor, C = 1 or 3, one at a time as torch-fidelity reads them:
    uint8 3 x H x W on the CPU, grayscale repeated to RGB. No resizing (torch-fidelity's Inception resizes
    to 299 x 299 itself)."""

    def __init__(self, images: Tensor, name: str = "images") -> None:
        check_images(images, name)
        self.images = images.detach().cpu()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        image = self.images[index]
        return image.repeat(3, 1, 1) if image.shape[0] == 1 else image


def check_images(images: Tensor, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a uint8 (N, C, H, W) tensor with C in {1, 3} and N >= 2."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name}: expected a uint8 tensor (N, C, H, W), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(
            f"{name}: expected dtype torch.uint8 (values 0..255: map v in [0, 1] by (255 v).round()), "
            f"got {images.dtype}"
        )
    if images.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected 1 or 3 channels, got {images.shape[1]} (shape {tuple(images.shape)})")
    if images.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 images (a covariance and KID need 2), got {images.shape[0]}")
    if images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"{name}: empty images, shape {tuple(images.shape)}")


def kid_subset(requested: int | None, num_generated: int, num_reference: int) -> int:
    """The KID subset size used: ``requested`` (default :data:`KID_SUBSET_SIZE`, 1000) capped at the
    smaller set's size, since each subset is drawn without replacement from each set."""
    cap = min(num_generated, num_reference)
    if requested is None:
        return min(KID_SUBSET_SIZE, cap)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 2:
        raise ValueError(f"kid_subset_size must be an integer >= 2 (the unbiased MMD needs 2), got {requested!r}")
    return min(requested, cap)


def _cuda(device: str | torch.device) -> tuple[bool, contextlib.AbstractContextManager]:
    """torch-fidelity's ``cuda`` flag for ``device`` and a context making an indexed GPU current (it calls
    ``.cuda()``, which uses the current device)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return False, contextlib.nullcontext()
    if dev.type == "cuda":
        return True, torch.cuda.device(dev) if dev.index is not None else contextlib.nullcontext()
    raise ValueError(f"device must be a CPU or CUDA device (torch-fidelity supports only these), got {str(dev)!r}")


def fidelity_metrics(
    generated: Tensor,
    reference: Tensor,
    torch_home: str | Path,
    *,
    kid_subset_size: int | None = None,
    isc: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict[str, float | int | Tensor]:
    """FID and KID of ``generated`` against ``reference`` (and the Inception Score of ``generated`` when
    ``isc``) on Inception pool3 features, with the features themselves.

    Both sets are uint8 (N, C, H, W) with C = 1 (repeated to RGB) or 3 and at least 2 images; their
    sizes, channels and image sizes may differ (each image is resized to 299 x 299 by torch-fidelity,
    bilinearly as TF 1.x did). Definitions (module docstring)::

        FID = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))      on the 2048-d pool3 features
        KID = mean over subsets of the unbiased MMD^2, kernel k(x, y) = (x.y / 2048 + 1)^3

    FID is biased upwards with few samples: compare it only at equal set sizes.

    The Inception file is checked with :func:`~missingu.weights.require_weights` first: when it is not
    staged in ``<torch_home>/hub/checkpoints``, :class:`~missingu.weights.WeightsUnavailable` (``not
    computed: stage weights-inception-2015-12-05-6726825d.pth in <dir>``) is raised and torch-fidelity is
    not called. It is passed as ``feature_extractor_weights_path``, so nothing is downloaded.

    The computation is ``torch_fidelity.calculate_metrics``'s (with ``cache=False``, ``verbose=False``,
    ``save_cpu_ram=True``), done step by step with its own functions so the features can be kept: one
    Inception (``utils.create_feature_extractor``, layers ``2048`` and, with ``isc``, ``logits_unbiased``)
    runs once over each set (``utils.get_featuresdict_from_dataset``: uint8 RGB batches of ``batch_size``,
    no DataLoader workers, no feature files written), then ``metric_fid.fid_featuresdict_to_statistics`` +
    ``fid_statistics_to_metric``, ``metric_kid.kid_featuresdict_to_metric`` and
    ``metric_isc.isc_featuresdict_to_metric`` (torch-fidelity's default seed, ``rng_seed`` 2020, for the KID
    subsets and the IS shuffle). The values are those of ``calculate_metrics`` on the same inputs (tested).

    ``kid_subset_size`` defaults to ``min(1000, num_generated, num_reference)``; a larger value is reduced
    to that cap. When it equals both set sizes every subset holds all images, so ``kid_std`` is 0 by
    construction. The Inception Score uses ``min(10, num_generated // 2)`` splits (so each has >= 2 images).

    Returns ``fid``, ``kid_mean``, ``kid_std`` (floats), ``kid_subset_size``, ``num_generated``,
    ``num_reference`` (ints), ``features_generated`` (N, 2048) and ``features_reference`` (M, 2048) (the
    pool3 features FID and KID were computed from, float32 on the CPU, in input order; FID from them:
    :func:`missingu.metrics.frechet.frechet_distance_features` ``(features_reference, features_generated)``)
    and, with ``isc``, ``isc_mean``, ``isc_std`` and ``isc_splits``.
    """
    gen_set = ImageTensorDataset(generated, "generated")
    ref_set = ImageTensorDataset(reference, "reference")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_gen, n_ref = len(gen_set), len(ref_set)
    subset = kid_subset(kid_subset_size, n_gen, n_ref)
    cuda, current_gpu = _cuda(device)
    splits = min(ISC_SPLITS, n_gen // 2)

    weights_path = require_weights("inception", torch_home)
    from torch_fidelity import metric_fid, metric_isc, metric_kid, utils

    # the keyword arguments calculate_metrics would get; its other settings keep their defaults
    options = dict(
        fid=True,
        kid=True,
        isc=isc,
        kid_subset_size=subset,
        isc_splits=splits,
        feature_extractor_weights_path=str(weights_path),
        cuda=cuda,
        batch_size=batch_size,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    layers = [POOL3, LOGITS] if isc else [POOL3]
    with current_gpu:
        extractor = utils.create_feature_extractor(FEATURE_EXTRACTOR, layers, **options)
        extract = dict(feat_extractor=extractor, batch_size=batch_size, cuda=cuda, save_cpu_ram=True, verbose=False)
        gen_features = utils.get_featuresdict_from_dataset(gen_set, **extract)
        ref_features = utils.get_featuresdict_from_dataset(ref_set, **extract)
    del extractor, extract

    raw: dict[str, float] = {}
    if isc:
        raw.update(metric_isc.isc_featuresdict_to_metric(gen_features, LOGITS, **options))
    gen_stats = metric_fid.fid_featuresdict_to_statistics(gen_features, POOL3)
    ref_stats = metric_fid.fid_featuresdict_to_statistics(ref_features, POOL3)
    raw.update(metric_fid.fid_statistics_to_metric(gen_stats, ref_stats, False))
    raw.update(metric_kid.kid_featuresdict_to_metric(gen_features, ref_features, POOL3, **options))

    out: dict[str, float | int | Tensor] = {ours: float(raw[theirs]) for theirs, ours in _KEYS.items() if theirs in raw}
    out.update(kid_subset_size=subset, num_generated=n_gen, num_reference=n_ref)
    if isc:
        out["isc_splits"] = splits
    out["features_generated"] = gen_features[POOL3].to("cpu", torch.float32)
    out["features_reference"] = ref_features[POOL3].to("cpu", torch.float32)
    return out
