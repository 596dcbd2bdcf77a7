"""A whole efficiency profile: which rows to measure, in what order, and keeping every row.

A profile is a list of jobs, one per (input shape, model, variant). Each measured row is
appended at once to a journal (``<out>.partial.jsonl``, one JSON line per row with a key that
hashes everything the row depends on: model config, shape, profile settings, trained weights,
device, torch and package version). A run cut short keeps its rows; run again, it measures only
the jobs whose key is not in the journal. ``models`` and ``shapes`` restrict a run to part of
the profile, and ``merge`` keeps the rows of an earlier part in the same CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError, to_dict
from .diffusion import Diffusion
from .io import InputFileError, atomic_open
from .models import CUNetConfig, check_image_size
from .profiling import cunet_ablations, environment, format_shape, profile_model

log = logging.getLogger(__name__)

Shape = tuple[int, int, int]
Row = dict[str, Any]
ROW_IDENTITY = ("device_name", "dataset", "model", "variant", "shape")  # a row measured again replaces this one


def parse_shape(text: str) -> Shape:
    """``"3x64x64"`` -> ``(3, 64, 64)``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--shapes: {text!r} is not a shape; write CxHxW, e.g. 3x64x64")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def compatible(config: Any, shape: Shape) -> bool:
    """Whether a model config can take ``shape`` (enough halvings of the image size)."""
    try:
        check_image_size(config, shape[1])
    except ConfigError:
        return False
    return shape[1] == shape[2]


@dataclass(frozen=True)
class ProfileJob:
    """One row to measure: a model (or a cU-Net ablation ``variant``) at an input shape, with
    trained weights from ``checkpoint`` where the pipeline has them."""

    dataset: str  # "" for the extra ``profile.shapes``
    model: str
    arch: str
    preset: str
    variant: str
    config: Any
    shape: Shape
    full: bool
    checkpoint: Path | None

    def describe(self) -> str:
        return f"{self.model} {self.variant} {format_shape(self.shape)}"


def plan(
    cfg: Any,
    checkpoints: dict[tuple[str, str], Path] | None = None,
    models: Sequence[str] | None = None,
    shapes: Sequence[Shape] | None = None,
) -> list[ProfileJob]:
    """The jobs of a profile: every model at every dataset's shape and every ``profile.shapes``
    entry it can take, then its cU-Net ablations (``profile.ablations``). ``models`` and
    ``shapes`` keep only those (unknown names or shapes raise ``ConfigError``)."""
    checkpoints = checkpoints or {}
    every: dict[Shape, str] = {}
    for data in cfg.datasets:
        every.setdefault((data.channels, data.size, data.size), data.name)
    for shape in cfg.profile.shapes:
        every.setdefault(tuple(shape), "")
    if shapes is not None:
        unknown = [format_shape(s) for s in shapes if tuple(s) not in every]
        if unknown:
            raise ConfigError(f"--shapes: {unknown[0]} is not profiled by this config; allowed: "
                              f"{', '.join(map(format_shape, every))} (add it to profile.shapes)")
        every = {s: d for s, d in every.items() if s in set(map(tuple, shapes))}
    specs = [cfg.model(name) for name in models] if models is not None else list(cfg.models)
    jobs = []
    for shape, dataset in every.items():
        for spec in specs:
            config = spec.resolve()
            if not compatible(config, shape):
                continue
            path = checkpoints.get((dataset, spec.name)) if dataset else None
            common = dict(dataset=dataset, model=spec.name, arch=spec.arch, preset=spec.preset, shape=shape,
                          checkpoint=path)
            jobs.append(ProfileJob(variant="base", config=config, full=True, **common))
            if cfg.profile.ablations and isinstance(config, CUNetConfig):
                jobs += [ProfileJob(variant=name, config=variant, full=False, **common)
                         for name, variant in cunet_ablations(config).items() if variant != config]
    return jobs


def check_checkpoints(cfg: Any, checkpoints: dict[tuple[str, str], Path]) -> None:
    """Each ``--checkpoint DATASET/MODEL=PATH`` must be a snapshot of that model as configured,
    trained at that dataset's shape; otherwise ``InputFileError`` names the file and the mismatch."""
    from .train import load_snapshot

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
    from tqdm.auto import tqdm

    from .train import load_snapshot

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
                                         diffusion=diffusion, full=job.full)
                row = {**env, "dataset": job.dataset, "model": job.model, "arch": job.arch, "preset": job.preset,
                       "variant": job.variant, **measured}
                fh.write(json.dumps({"key": key, "row": row}) + "\n")
                fh.flush()
                log.info("profile %d/%d: %s (%.1f s)", i + 1, len(jobs), job.describe(), time.perf_counter() - t0)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a profile CSV as written by :func:`write_rows` (values kept as text)."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def merge_rows(earlier: Sequence[Row], rows: Sequence[Row]) -> list[Row]:
    """``earlier`` rows that ``rows`` does not measure again (same device, dataset, model,
    variant and shape), followed by ``rows``."""
    def identity(row: Row) -> tuple:
        return tuple(str(row.get(k, "")) for k in ROW_IDENTITY)

    measured = {identity(r) for r in rows}
    return [r for r in earlier if identity(r) not in measured] + list(rows)


def write_rows(rows: Sequence[Row], path: str | Path) -> None:
    """Write profile rows as CSV (atomic); columns in first-seen order, blanks where a row has none."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_open(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
