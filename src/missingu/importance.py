"""Which steps matter: DDSM's step-importance experiment, part of the step-aware study.

The full network serves every visited step but one window of consecutive ones, where a smaller
network (a narrower width, or a mixed-in model such as the cU-Net) serves instead; the window
slides over the trajectory, and each such strategy's quality is compared with the full width's on
the same seeds. A window where the smaller network costs quality holds steps that matter; one
where it costs nothing holds steps a cheaper network can take. :func:`sweep` makes the strategies,
:func:`change_intervals` the paired bootstrap interval of each quality change, :func:`importance_rows`
the sweep's table; the study (:func:`missingu.stepaware.run_study`) samples and scores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .config import ConfigError
from .specs.stepaware import ImportanceConfig  # noqa: F401  (re-exported)
from .stats import LEVEL, RESAMPLES, fd_replicates, percentile_interval
from .strategies import Choice, Strategy, label


def windows_of(visited: Sequence[int], windows: int) -> list[list[int]]:
    """The visited steps in increasing ``t`` (window 0 holds the least noisy) cut into ``windows``
    runs of consecutive steps whose sizes differ by at most one (the first ``len % windows`` one
    longer); every visited step lies in exactly one window."""
    steps = sorted(visited)
    if not 0 < windows <= len(steps):
        raise ConfigError(f"stepaware.importance.windows: {windows} windows over {len(steps)} visited steps; "
                          f"allowed: 1 to {len(steps)}")
    size, extra = divmod(len(steps), windows)
    out, start = [], 0
    for i in range(windows):
        end = start + size + (i < extra)
        out.append(steps[start:end])
        start = end
    return out


def sweep(visited: Sequence[int], windows: int, full: Choice, networks: Sequence[Choice],
          timesteps: int) -> list[tuple[dict[str, Any], Strategy]]:
    """One strategy per (network, window): ``network`` at the window's visited steps, ``full``
    at every other, with the row fields naming it (``window``, its first and last step ``t_low``,
    ``t_high``, its number of ``steps``, the ``network``'s label)."""
    out = []
    for network in networks:
        for i, inside in enumerate(windows_of(visited, windows)):
            chosen = set(inside)
            strategy = Strategy.from_visited(visited, [network if t in chosen else full for t in visited], timesteps)
            out.append(({"window": i, "t_low": inside[0], "t_high": inside[-1], "steps": len(inside),
                         "network": label(network)}, strategy))
    return out


def change_intervals(reference: Tensor, full: Tensor, cells: Sequence[Tensor], estimates: Sequence[float], *,
                     level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
                     device: torch.device | str = "cpu") -> list[tuple[float, float]]:
    """The paired bootstrap interval of ``FD(cell) - FD(full)`` for each cell: every cell and the
    full width sampled from the same seeds, so replicate ``b`` resamples the same rows of all of
    them (and the reference's rows with an index set of its own), as the verdicts' intervals do
    (:func:`missingu.stats.fd_replicates`); ``estimates`` are the point values. Computed on
    ``device`` in chunks of at most 1 GiB of resampled features."""
    if not cells:
        return []
    n = min(len(full), *(len(c) for c in cells))
    arms = [a[:n].to(device) for a in (full, *cells)]
    chunk = max(1, min(50, 2**30 // (8 * reference.shape[1] * max(n, len(reference)))))
    reps = fd_replicates(reference.to(device), arms, resamples=resamples, seed=seed, chunk=chunk)
    out = []
    for k, estimate in enumerate(estimates):
        interval = percentile_interval(estimate, reps[k + 1] - reps[0], level, n)
        out.append((interval.low, interval.high))
    return out


def importance_rows(cells: Sequence[tuple[dict[str, Any], dict[str, Any], Tensor]], full_row: Mapping[str, Any],
                    full_features: Tensor, reference: Tensor | None, *, seed: int = 0,
                    device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """One row per (network, window) of the sweep: where it is, the quality on the fresh seeds,
    the full width's on the same seeds, the ``change`` (the first minus the second: above 0,
    the smaller network costs quality there) with its paired bootstrap interval
    (``change_low``, ``change_high``; blank without ``reference`` features), and the cost.
    ``cells``: (the sweep's row fields, the evaluation's row, its features)."""
    changes = [row["quality"] - full_row["quality"] for _, row, _ in cells]
    intervals = (change_intervals(reference, full_features, [f for _, _, f in cells], changes, seed=seed,
                                  device=device) if reference is not None else [(None, None)] * len(cells))
    return [{**stub, "quality": row["quality"], "full_quality": full_row["quality"], "change": change,
             "change_low": low, "change_high": high, "level": LEVEL, "samples": row["samples"],
             "mean_gflops": row["mean_gflops"], "saving": row["saving"], "seconds_per_image": row["seconds_per_image"]}
            for (stub, row, _), change, (low, high) in zip(cells, changes, intervals)]
