"""The efficiency profile (``missingu profile``): parameters, FLOPs, ODE evaluations, latency,
sampling time and training memory of every model at every input shape, cU-Net ablations beside.

A profile is a list of jobs, one per (input shape, model, variant). Each measured row is
appended at once to a journal (``<out>.partial.jsonl``, one JSON line per row with a key that
hashes everything the row depends on: model config, shape, profile settings, trained weights,
device, torch and package version). A run cut short keeps its rows; run again, it measures only
the jobs whose key is not in the journal. ``models`` and ``shapes`` restrict a run to part of
the profile, and ``merge`` keeps the rows of an earlier part in the same CSV. The measurements
themselves are :mod:`missingu.measure`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import to_dict
from .diffusion import Diffusion
from .io import InputFileError, atomic_open
from .measure import (
    call_latencies,
    count_parameters,
    environment,
    measure_call,
    sample_latency,
    train_step_memory,
    weights_fit,
)
from .models import CUNetConfig, build_model
from .samplers import expected_calls
from .snapshot import load_snapshot
from .specs.profile import (  # noqa: F401  (re-exported)
    PAPER_COUNTS,
    CountSpec,
    ProfileConfig,
    ProfileJob,
    Shape,
    count_jobs,
    cunet_ablations,
    plan,
    work,
)
from .task import Result, format_shape

log = logging.getLogger(__name__)

Row = dict[str, Any]
ROW_IDENTITY = ("device_name", "dataset", "model", "variant", "shape")  # a row measured again replaces this one


def profile_model(
    arch: str,
    config: Any,
    shape: tuple[int, int, int],
    cfg: ProfileConfig,
    device: torch.device,
    *,
    state_dict: dict | None = None,
    diffusion: Diffusion | None = None,
    full: bool = True,
    count_only: bool = False,
    width: float | None = None,
) -> dict[str, Any]:
    """One row of measurements for a model config at an input shape. ``state_dict`` is loaded
    when its names and shapes fit the model (an ablation variant with other layers keeps its
    initial weights; the row's ``weights`` column says which). ``full=False`` (ablation rows)
    skips sampling, memory and all but the first batch size; ``count_only`` measures parameters
    and FLOPs alone (a slimmable model at ``width``). Latency columns hold the median of the
    repeats, and ``latency_repeats_ms_b<batch>`` every repeat's time (space-separated)."""
    model = build_model(arch, config, shape[0], shape[1]).to(device)
    trained = state_dict is not None and weights_fit(model, state_dict)
    if trained:
        model.load_state_dict(state_dict)
    if width is not None:
        model.width = width
    cost = measure_call(model, shape)
    row: dict[str, Any] = {
        "shape": format_shape(shape),
        "weights": "trained" if trained else "init",
        "params_total": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "flops_per_call": cost.flops, "macs_per_call": int(cost.macs), "ode_evals_per_call": cost.nfe,
    }
    if count_only:
        return row
    for batch in cfg.batch_sizes if full else cfg.batch_sizes[:1]:
        times = call_latencies(model, shape, batch, cfg.warmup, cfg.repeats)
        seconds = statistics.median(times)
        row[f"latency_ms_b{batch}"] = seconds * 1000
        row[f"images_per_s_b{batch}"] = batch / seconds
        row[f"latency_repeats_ms_b{batch}"] = " ".join(f"{t * 1000:.6g}" for t in times)
    if not full:
        return row
    diffusion = (diffusion or Diffusion()).to(device)
    for spec in cfg.samplers:
        seconds, calls, evals = sample_latency(model, diffusion, spec, shape, cfg.sample_batch)
        row[f"sample_s_{spec.name}"] = seconds
        row[f"sample_calls_{spec.name}"] = calls
        row[f"sample_adaptive_{spec.name}"] = expected_calls(spec, diffusion.timesteps) is None
    row["train_step_mib"] = train_step_memory(arch, config, shape, cfg.memory_batch, device)
    if isinstance(config, CUNetConfig):
        adjoint = replace(config, adjoint=not config.adjoint)
        key = "train_step_mib_adjoint" if not config.adjoint else "train_step_mib_no_adjoint"
        row[key] = train_step_memory(arch, adjoint, shape, cfg.memory_batch, device)
    return row


def check_checkpoints(cfg: Any, checkpoints: dict[tuple[str, str], Path]) -> None:
    """Each ``--checkpoint DATASET/MODEL=PATH`` must be a snapshot of that model as configured,
    trained at that dataset's shape; otherwise ``InputFileError`` names the file and the mismatch."""
    for (dataset, model), path in checkpoints.items():
        data, spec = cfg.dataset(dataset), cfg.model(model)
        meta = load_snapshot(path)["meta"]
        want = {"arch": spec.arch, "model": to_dict(spec.resolve()),
                "image_shape": [data.channels, data.size, data.size]}
        for key, value in want.items():
            if meta.get(key) != value:
                raise InputFileError(
                    f"--checkpoint {dataset}/{model}={path}: its {key} is {meta.get(key)!r}; the config's "
                    f"model {model!r} on {dataset!r} needs {value!r}"
                )


def job_key(job: ProfileJob, cfg: Any, env: Row) -> str:
    """A hash of everything a row depends on (a changed checkpoint file changes it too)."""
    settings = {k: v for k, v in to_dict(cfg.profile).items() if k not in ("shapes", "ablations")}
    checkpoint = None
    if job.checkpoint is not None:
        stat = Path(job.checkpoint).stat()
        checkpoint = [str(job.checkpoint), stat.st_size, stat.st_mtime_ns]
    data = {"job": [job.dataset, job.model, job.arch, job.preset, job.variant, to_dict(job.config),
                    list(job.shape), job.full],
            "checkpoint": checkpoint, "profile": settings, "diffusion": to_dict(cfg.diffusion), "env": env,
            "version": __version__}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def journal_path(out: str | Path) -> Path:
    """Where the rows of a profile written to ``out`` are kept while it runs."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _read_journal(path: Path, wanted: set[str]) -> dict[str, Row]:
    """Rows of ``path`` whose key is wanted; a line cut short by a kill is skipped."""
    rows: dict[str, Row] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("key") in wanted:
            rows[entry["key"]] = entry["row"]
    return rows


def run_profile(
    cfg: Any,
    device: Any,
    jobs: Sequence[ProfileJob],
    journal: Path,
    on_row: Callable[[list[Row]], None] | None = None,
    progress: bool = False,
) -> list[Row]:
    """Measure ``jobs`` in order, appending each row to ``journal`` as soon as it is measured;
    rows already in the journal with the same key are reused, not measured again.
    ``on_row(rows_so_far)`` is called after each row."""
    from tqdm import tqdm

    env = environment(device)
    keys = [job_key(job, cfg, env) for job in jobs]
    done = _read_journal(journal, set(keys))
    if done:
        log.info("reusing %d of %d rows measured by an earlier run (%s)", len(done), len(jobs), journal)
    with atomic_open(journal) as fh:  # keep only the rows of this profile
        fh.writelines(json.dumps({"key": k, "row": r}) + "\n" for k, r in done.items())
    diffusion = Diffusion(cfg.diffusion)
    states: dict[Path, dict] = {}
    rows: list[Row] = []
    with open(journal, "a") as fh:
        for i, (job, key) in enumerate(zip(tqdm(jobs, desc="profile", disable=not progress), keys)):
            if key in done:
                row = done[key]
            else:
                t0 = time.perf_counter()
                state = None
                if job.checkpoint is not None:
                    if job.checkpoint not in states:
                        states[job.checkpoint] = load_snapshot(job.checkpoint)["state_dict"]
                    state = states[job.checkpoint]
                measured = profile_model(job.arch, job.config, job.shape, cfg.profile, device, state_dict=state,
                                         diffusion=diffusion, full=job.full, count_only=job.count_only,
                                         width=job.width)
                row = {**env, "dataset": job.dataset, "model": job.model, "arch": job.arch, "preset": job.preset,
                       "variant": job.variant, **({} if job.width is None else {"width": job.width}), **measured}
                fh.write(json.dumps({"key": key, "row": row}) + "\n")
                fh.flush()
                log.info("profile %d/%d: %s (%.1f s)", i + 1, len(jobs), job.describe(), time.perf_counter() - t0)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def merge_rows(earlier: Sequence[Row], rows: Sequence[Row]) -> list[Row]:
    """``earlier`` rows that ``rows`` does not measure again (same device, dataset, model,
    variant and shape), followed by ``rows``."""
    def identity(row: Row) -> tuple:
        return tuple(str(row.get(k, "")) for k in ROW_IDENTITY)

    measured = {identity(r) for r in rows}
    return [r for r in earlier if identity(r) not in measured] + list(rows)


def run(cfg: Any, device: Any, jobs: Sequence[ProfileJob], journal: Path, *, earlier: Sequence[Row] = (),
        on_row: Callable[[list[Row]], None] | None = None, progress: bool = False) -> Result:
    """The profile (:func:`run_profile`) as a :class:`~missingu.task.Result`: rows = the ``earlier``
    rows it does not measure again followed by this run's (:func:`merge_rows`); ``on_row`` gets
    the merged rows so far. The record counts both."""
    rows = run_profile(cfg, device, jobs, journal, progress=progress,
                       on_row=None if on_row is None else (lambda so_far: on_row(merge_rows(earlier, so_far))))
    merged = merge_rows(earlier, rows)
    return Result(rows=merged, record={"measured": len(rows), "kept": len(merged) - len(rows),
                                       "device_name": rows[0]["device_name"] if rows else None})
