"""Frechet distance between two Gaussians fitted to feature sets (N, D).

For ``X ~ N(mu1, C1)`` and ``Y ~ N(mu2, C2)`` the squared 2-Wasserstein (Frechet) distance is::

    d^2 = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))

(Dowson & Landau, 1982). Feature sets enter through their sample mean and unbiased covariance
(:func:`gaussian_stats`). Which features: :func:`missingu.classifier.classifier_frechet_distance`
uses the penultimate layer of a small classifier trained on the dataset (no download; not the
Inception network of FID, so its values are not comparable with published FIDs).
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``mu = (1/N) sum_i f_i`` (D,) and unbiased covariance
    ``C = (1/(N-1)) sum_i (f_i - mu)(f_i - mu)^T`` (D, D) of features (N, D), both float64.

    Needs ``N >= 2`` and finite values; else ``ValueError``.
    """
    if not isinstance(features, Tensor) or features.ndim != 2:
        what = f"shape {tuple(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features: expected a tensor (N, D), got {what}")
    if features.shape[0] < 2:
        raise ValueError(f"features: need at least 2 rows for a covariance, got {features.shape[0]}")
    f = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(f).all():
        raise ValueError("features: contain NaN or infinite values")
    mu = f.mean(dim=0)
    centred = f - mu
    cov = centred.T @ centred / (f.shape[0] - 1)
    return mu, cov


def _check_stats(mu: Tensor, cov: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(mu, Tensor) and isinstance(cov, Tensor)):
        raise ValueError(f"{name}: mean and covariance must be tensors")
    if mu.ndim != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name}: expected a mean (D,) and a covariance (D, D), got {tuple(mu.shape)} and {tuple(cov.shape)}"
        )
    mu, cov = mu.detach().to("cpu", torch.float64), cov.detach().to("cpu", torch.float64)
    if not (torch.isfinite(mu).all() and torch.isfinite(cov).all()):
        raise ValueError(f"{name}: mean or covariance contains NaN or infinite values")
    return mu, (cov + cov.T) / 2  # exactly symmetric, for eigh


def _psd_sqrt(cov: Tensor) -> Tensor:
    """Symmetric square root ``S = V diag(sqrt(max(l, 0))) V^T`` of a symmetric PSD matrix."""
    eigenvalues, vectors = torch.linalg.eigh(cov)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """``||mu1 - mu2||^2 + Tr(C1) + Tr(C2) - 2 Tr((C1 C2)^(1/2))`` in float64.

    The trace term avoids a general (non-symmetric) matrix square root: with ``S = C1^(1/2)``
    (symmetric, from ``eigh``), ``C1 C2 = S (S C2)`` has the eigenvalues of ``(S C2) S = S C2 S``,
    a symmetric PSD matrix, so ``Tr((C1 C2)^(1/2)) = sum_k sqrt(lambda_k(S C2 S))``. Both
    eigendecompositions are symmetric (``eigh``: real, backward stable); eigenvalues that rounding
    makes slightly negative are clamped to 0. This stays real and accurate for singular
    covariances (fewer samples than dimensions, dead features), where ``scipy.linalg.sqrtm`` of the
    non-symmetric ``C1 C2`` can return complex parts and needs an ad hoc diagonal offset. The
    result is symmetric in its two Gaussians up to rounding (~1e-12 relative, tested) and is
    clamped at 0 (it is a squared distance; rounding can leave ``-1e-15``).

    Mismatched shapes (means (D,), covariances (D, D), one D) raise ``ValueError``.
    """
    mu1, cov1 = _check_stats(mu1, cov1, "first Gaussian")
    mu2, cov2 = _check_stats(mu2, cov2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two Gaussians differ in dimension: {mu1.shape[0]} vs {mu2.shape[0]}")
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_sqrt
    return max(float(value), 0.0)


def frechet_distance_features(a: Tensor, b: Tensor) -> float:
    """:func:`frechet_distance` between Gaussians fitted (:func:`gaussian_stats`) to features
    ``a`` (N, D) and ``b`` (M, D). Differing ``D`` raises ``ValueError``.

    The estimate from samples is biased upwards: for two samples of one distribution the mean
    term alone is ``Tr(C) (1/N + 1/M)`` in expectation, and the covariance terms add more when
    ``D`` is not small against ``N``. Compare values computed with the same sample sizes.
    """
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.ndim == b.ndim == 2 and a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
