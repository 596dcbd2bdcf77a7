"""Intervals for measured effects: the paired bootstrap, Frechet distances of resampled features,
the bias-corrected Frechet distance, and how many samples would resolve an interval.

A verdict on a claim is an interval against a threshold (:mod:`missingu.report.claims`), and the
interval comes from here. Where two arms share their randomness (sample ``k`` of both models drew
seed ``k``; both denoisers saw image ``i``), the **paired bootstrap** resamples indices jointly:
replicate ``b`` draws one index set ``I_b`` (with replacement) and recomputes the statistic of
every arm on ``I_b``; the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates
are the percentile interval (Efron & Tibshirani 1993, ch. 13). Index draws come from a generator
seeded with ``seed``, so a table is the same on every run. A Frechet distance (FD, FID) is
resampled from its cached features, the reference's rows resampled too (the same ``J_b`` for every
arm), so no network runs again.

A Frechet distance estimated from ``N`` samples is biased upwards by about ``Tr(C)(1/N + 1/M)``
plus a covariance term that is large when ``N`` is not much larger than the feature dimension.
The bias cancels in the difference of two FDs at the same ``N`` against the same reference; the
spread does not, and the bootstrap of the difference measures that spread. Chong & Forsyth (2020,
"Effectively Unbiased FID") fit FD against ``1/N`` over subsets and extrapolate to ``N -> inf``:
:func:`fd_infinity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

LEVEL = 0.95
RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``level`` interval ``[low, high]`` from ``n`` samples (or images, or
    repeats); ``method`` says how the interval was made."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL
    n: int = 0
    method: str = "paired bootstrap"

    @classmethod
    def exact(cls, value: float, n: int = 0) -> Interval:
        """A deterministic quantity (a parameter count, FLOPs): the interval is the point."""
        return cls(value, value, value, 1.0, n, "exact")

    def text(self, fmt: str = ".4g") -> str:
        if self.method == "exact":
            return format(self.estimate, fmt)
        return (f"{self.estimate:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}] ({self.level:.0%} {self.method}, "
                f"n={self.n})")

    def samples_to_resolve(self, threshold: float) -> int | None:
        """About how many samples would make the interval exclude ``threshold``: the half-width
        shrinks as ``1/sqrt(n)``, so ``n (half-width / |estimate - threshold|)^2``; ``None`` when
        the estimate sits on the threshold or the interval has no width."""
        half = (self.high - self.low) / 2
        gap = abs(self.estimate - threshold)
        if self.n <= 0 or half <= 0 or gap == 0 or not math.isfinite(half):
            return None
        return max(self.n + 1, math.ceil(self.n * (half / gap) ** 2))


def bootstrap_indices(n: int, resamples: int, seed: int) -> Tensor:
    """``(resamples, n)`` indices drawn with replacement from ``range(n)`` by a generator seeded
    with ``seed``: the same rows for every arm that shares the seed."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n, (resamples, n), generator=g)


def percentile_interval(estimate: float, replicates: Tensor, level: float = LEVEL, n: int = 0,
                        method: str = "paired bootstrap") -> Interval:
    """The percentile interval of bootstrap ``replicates`` (non-finite ones dropped)."""
    r = replicates.double().flatten()
    r = r[torch.isfinite(r)]
    if r.numel() == 0:
        return Interval(estimate, math.nan, math.nan, level, n, method)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(r, q).tolist()
    return Interval(float(estimate), float(low), float(high), level, n, method)


def paired_bootstrap(statistic: Callable[..., Tensor | float], *arrays: Tensor, resamples: int = RESAMPLES,
                     level: float = LEVEL, seed: int = 0) -> Interval:
    """The interval of ``statistic(*arrays)``, every array resampled on the same rows (axis 0, the
    paired unit: a seed, an image). ``statistic`` is called once on the data and once per replicate."""
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"paired arrays must have the same length; got {[a.shape[0] for a in arrays]}")
    estimate = float(statistic(*arrays))
    idx = bootstrap_indices(n, resamples, seed)
    reps = torch.tensor([float(statistic(*(a[i] for a in arrays))) for i in idx], dtype=torch.float64)
    return percentile_interval(estimate, reps, level, n)


def _stats(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Means (B, D), centred rows (B, N, D) and unbiased covariances (B, D, D), float64, of a batch
    of feature sets (B, N, D)."""
    f = features.double()
    mu = f.mean(dim=1)
    x = f - mu[:, None, :]
    return mu, x, x.transpose(1, 2) @ x / (f.shape[1] - 1)


def _frechet(one: tuple[Tensor, Tensor, Tensor], two: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    mu1, x1, c1 = one
    mu2, x2, c2 = two
    if min(x1.shape[1], x2.shape[1]) < x1.shape[2]:
        small, other = (x1, c2) if x1.shape[1] <= x2.shape[1] else (x2, c1)
        middle = small @ other @ small.transpose(1, 2) / (small.shape[1] - 1)
    else:
        w, v = torch.linalg.eigh((c1 + c1.transpose(1, 2)) / 2)
        s1 = (v * w.clamp(min=0).sqrt()[:, None, :]) @ v.transpose(1, 2)
        middle = s1 @ c2 @ s1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.transpose(1, 2)) / 2).clamp(min=0).sqrt().sum(dim=1)
    traces = c1.diagonal(dim1=1, dim2=2).sum(1) + c2.diagonal(dim1=1, dim2=2).sum(1)
    return ((mu1 - mu2).pow(2).sum(dim=1) + traces - 2 * trace_sqrt).clamp(min=0)


def frechet_batch(a: Tensor, b: Tensor) -> Tensor:
    """Frechet distances (B,) between the feature sets ``a[k]`` (B, N, D) and ``b[k]`` (B, M, D):
    :func:`missingu.metrics.frechet.frechet_distance`, batched. ``Tr((C1 C2)^(1/2))`` is the sum of
    the square roots of the eigenvalues of ``C1 C2``; with ``C2 = X^T X / (N - 1)`` (``X`` the
    centred rows) they are those of the ``N x N`` symmetric ``X C1 X^T / (N - 1)``, so when a set
    has fewer rows than dimensions one small symmetric eigenproblem does; otherwise
    ``S C2 S`` with ``S = C1^(1/2)`` (both symmetric: ``eigh``)."""
    return _frechet(_stats(a), _stats(b))


def fd_replicates(reference: Tensor, arms: Sequence[Tensor], *, resamples: int = RESAMPLES, seed: int = 0,
                  chunk: int = 50) -> Tensor:
    """Bootstrap replicates (len(arms), resamples) of the FD of each arm's features (N, D) to the
    reference's (M, D): replicate ``b`` resamples the arms' rows with one index set (every arm has
    N rows, paired by seed) and the reference's with another, the same for every arm."""
    n, m = arms[0].shape[0], reference.shape[0]
    if any(a.shape[0] != n for a in arms):
        raise ValueError(f"paired feature sets must have the same number of rows; got {[a.shape[0] for a in arms]}")
    idx, ref_idx = bootstrap_indices(n, resamples, seed), bootstrap_indices(m, resamples, seed + 1)
    reference = reference.double()
    arms = [a.double() for a in arms]
    out = torch.empty(len(arms), resamples, dtype=torch.float64)
    for start in range(0, resamples, chunk):
        ref = _stats(reference[ref_idx[start:start + chunk]])
        for k, arm in enumerate(arms):
            out[k, start:start + chunk] = _frechet(_stats(arm[idx[start:start + chunk]]), ref)
    return out


def fd_infinity(reference: Tensor, features: Tensor, *, points: int = 5, seed: int = 0) -> float | None:
    """FD extrapolated to infinitely many samples (Chong & Forsyth 2020): FD of ``points`` subset
    sizes from N/2 to N (a seeded subset each) fitted linearly against 1/N_i, the intercept. ``None``
    below 20 samples or twice the feature dimension: FD is linear in 1/N only when the subsets are
    well above the dimension (at N = 36 with 64 features the fit even went negative)."""
    n = features.shape[0]
    if n < max(20, 2 * features.shape[1]):
        return None
    g = torch.Generator().manual_seed(int(seed))
    sizes = sorted({max(2, round(n * f)) for f in torch.linspace(0.5, 1.0, points).tolist()})
    xs, ys = [], []
    for size in sizes:
        rows = torch.randperm(n, generator=g)[:size]
        ys.append(float(frechet_batch(features[rows][None], reference[None])[0]))
        xs.append(1.0 / size)
    x, y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return float(y.mean() - slope * x.mean())
