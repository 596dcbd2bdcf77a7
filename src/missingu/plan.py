"""What an experiment will cost before it runs: every compute job of the pipeline with its
estimated device-hours, totals per stage, the largest job, and the SLURM request of each.

One source for job sizes: the pipeline's SLURM resources (``workflow/rules/resources.smk``) ask
for :func:`runtime_minutes` and :func:`memory_mb` of these same jobs, so the plan and the cluster
requests cannot drift apart. A job's time is its stage's ``work(...)`` (image values through
training steps and forward calls, :class:`missingu.task.Work`) at a throughput:

* stated (:data:`THROUGHPUT`): image values (C x H x W) per second of training, on 2 CPU cores
  5e4 (half the ~1e5 measured for the embedded default) and on one GPU 1e7 (about 800 images/s
  at 64x64x3; one H200 trained the paper presets at 911-1,359); a forward call costs a third of a
  training step's image; a timed measurement (a profile row, a benchmark variant) a minute;
* measured, for training and sampling, where a benchmark CSV of the same device has the model
  (``missingu bench`` rows: training images/s, seconds per sampled image per network call).

The SLURM runtime asks :data:`MARGIN` times the stated estimate (slower nodes, start-up,
checkpoints), at least 10 minutes.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .specs import bench, classifier, denoise, evaluate, profile, samplers, stepaware, train
from .task import Work, image_values

# Image values per second of training, on the CPU (2 cores) and on one GPU; see the module doc.
THROUGHPUT = {"cpu": 5e4, "gpu": 1e7}
FORWARD_COST = 1 / 3  # a forward call, in training steps of the same image
MEASUREMENT_MINUTES = 10  # a timed measurement of fixed cost, as SLURM runtime
MEASUREMENT_ESTIMATE_MINUTES = 1.0  # ... and as estimate (a profile row of the default: seconds)
STARTUP_SECONDS = 10.0  # a job's start: Python, torch, the data (7 s for `missingu info` on 2 CPU cores)
MARGIN = 2  # SLURM runtime over the estimate
MIN_MINUTES = 10
# Host memory a job asks (MB): a base, plus MB per MB of the dataset's training split; jobs on a
# GPU add room for the CUDA context. The data stage holds no model and never uses the GPU.
MEMORY = {
    "prepare_data": (1000, 3.0), "train": (1500, 2.0), "sample": (1500, 0.0), "denoise": (2000, 0.0),
    "train_classifier": (1500, 3.0), "evaluate": (3000, 3.0), "stepaware": (3000, 3.0), "profile": (3000, 0.0),
    "bench": (3000, 0.0),
}
GPU_MEMORY_MB = 4000
FIXED_MINUTES = {"prepare_data": 120}  # downloads and decoding: not proportional to image values
PREPARE_BYTES_PER_S = 5e6  # the estimate of a data job: its training split's bytes downloaded and decoded
# Each compute rule's stage (the notebooks, the claims table and the report run where Snakemake
# runs and take minutes).
STAGES = {
    "prepare_data": "data", "train": "train", "sample": "sample", "profile": "efficiency", "bench": "efficiency",
    "denoise": "denoise", "train_classifier": "quality", "evaluate": "quality", "stepaware": "stepaware",
}
GPU_RULES = {"train", "sample", "denoise", "train_classifier", "evaluate", "stepaware", "profile", "bench"}


@dataclass(frozen=True)
class Job:
    """One compute job: its rule, wildcards, stated and estimated seconds on its device(s), the
    SLURM runtime and memory it asks for, the GPUs it holds, and where its estimate comes from."""

    rule: str
    wildcards: dict[str, str]
    seconds: float  # the estimate (measured throughput where known), device-seconds over all its devices
    runtime_minutes: int
    mem_mb: int
    gpus: int
    source: str = "stated"
    peak_mib: float | None = None  # measured device memory of one training step, where known

    @property
    def stage(self) -> str:
        return STAGES[self.rule]

    @property
    def name(self) -> str:
        return "/".join(self.wildcards.values())


@dataclass(frozen=True)
class Rates:
    """Measured throughput of one device from benchmark rows: training images/s and seconds per
    image per network call (at the largest batch measured), by (arch, preset, shape)."""

    device: str
    train: dict[tuple[str, str, str], tuple[float, float | None]]  # images/s, peak MiB
    call: dict[tuple[str, str, str], float]  # seconds per image per network call
    files: tuple[str, ...] = ()


def _shape(cfg: Any, dataset: str) -> tuple[int, int, int]:
    spec = cfg.dataset(dataset)
    return (spec.channels, spec.size, spec.size)


def work_of(cfg: Any, rule: str, wildcards: dict[str, str]) -> Work:
    """The work of one job of ``rule`` (each stage library's ``work``)."""
    dataset = wildcards.get("dataset")
    shape = _shape(cfg, dataset) if dataset else None
    if rule == "train":
        model = wildcards["model"]
        return train.work(cfg.train_for(model), shape, cfg.model(model).resolve())
    if rule == "sample":
        return samplers.work(cfg.sampler(wildcards["sampler"]), cfg.diffusion.timesteps, cfg.sample.num_samples, shape)
    if rule == "denoise":
        return denoise.work(cfg.denoise, cfg.diffusion, shape)
    if rule == "train_classifier":
        return classifier.work(cfg.evaluate.classifier, shape)
    if rule == "evaluate":
        return evaluate.work(cfg.evaluate, cfg.sample.num_samples, shape)
    if rule == "stepaware":
        sa = cfg.study(wildcards.get("study"))
        networks = len(cfg.model(sa.model).resolve().widths) + len(sa.mix)
        return stepaware.work(sa, cfg.sampler(sa.sampler), cfg.diffusion.timesteps, networks, shape)
    if rule == "profile":
        return profile.work(cfg)
    if rule == "bench":
        return bench.work(cfg.bench, cfg.bench.input_shape(cfg.datasets), len(cfg.models) + cfg.bench.reference)
    return Work()


def stated_seconds(work: Work, gpu: bool) -> float:
    """Seconds of ``work``'s proportional part on one device at the stated throughput."""
    rate = THROUGHPUT["gpu" if gpu else "cpu"]
    return (work.train_values + work.forward_values * FORWARD_COST) / rate


def processes(cfg: Any, rule: str, wildcards: dict[str, str]) -> int:
    """Processes of a job: a training's ``train.gpus`` (its model's recipe), else 1."""
    return cfg.train_for(wildcards["model"]).gpus if rule == "train" else 1


def runtime_minutes(cfg: Any, rule: str, wildcards: dict[str, str], gpu: bool, work: Work | None = None) -> int:
    """The SLURM ``runtime`` a job asks: MARGIN x its stated wall time, at least MIN_MINUTES, plus
    MEASUREMENT_MINUTES per timed measurement (``work``: the job's, when already known)."""
    if rule in FIXED_MINUTES:
        return FIXED_MINUTES[rule]
    work = work_of(cfg, rule, wildcards) if work is None else work
    seconds = stated_seconds(work, gpu) / processes(cfg, rule, wildcards)
    return max(MIN_MINUTES, int(MARGIN * seconds / 60) + 1) + MEASUREMENT_MINUTES * work.measurements


def estimate_seconds(cfg: Any, rule: str, wildcards: dict[str, str], gpu: bool, work: Work | None = None) -> float:
    """A job's estimated device-seconds at the stated rates (over all its processes): its work at
    :data:`THROUGHPUT`, a timed measurement at MEASUREMENT_ESTIMATE_MINUTES, a data job at
    :data:`PREPARE_BYTES_PER_S`, each after STARTUP_SECONDS (``work``: the job's, when known)."""
    if rule == "prepare_data":
        return STARTUP_SECONDS + cfg.dataset(wildcards["dataset"]).train_bytes / PREPARE_BYTES_PER_S
    work = work_of(cfg, rule, wildcards) if work is None else work
    return STARTUP_SECONDS + stated_seconds(work, gpu) + 60 * MEASUREMENT_ESTIMATE_MINUTES * work.measurements


def memory_mb(cfg: Any, rule: str, wildcards: dict[str, str], gpu: bool) -> int:
    """The host memory (MB) a job asks for (:data:`MEMORY`)."""
    base, per_data = MEMORY[rule]
    dataset = wildcards.get("dataset")
    data_mb = cfg.dataset(dataset).train_bytes / 1e6 if dataset else 0.0
    return int(base + per_data * data_mb + (GPU_MEMORY_MB if gpu and rule in GPU_RULES else 0))


def gpus(cfg: Any, rule: str, wildcards: dict[str, str], gpu: bool) -> int:
    """GPUs a job holds: one per training process, one for every other GPU rule, none on a CPU."""
    return processes(cfg, rule, wildcards) if gpu and rule in GPU_RULES else 0


def jobs(cfg: Any, gpu: bool, rates: Rates | None = None) -> list[Job]:
    """Every compute job the pipeline runs for ``cfg`` (its matrix), in stage order."""
    listed: list[tuple[str, dict[str, str]]] = []
    for data in cfg.datasets:
        listed += [("prepare_data", {"dataset": data.name, "split": split}) for split in ("train", "test")]
    listed += [("train", {"dataset": d, "model": m}) for d, m in cfg.runs()]
    listed += [("sample", {"dataset": d, "model": m, "sampler": s}) for d, m, s in cfg.sampled()]
    listed += [("profile", {}), ("bench", {})]
    listed += [("denoise", {"dataset": d, "model": m}) for d, m in cfg.runs()]
    scored = {d for d, _, _ in cfg.sampled()} | set(cfg.stepaware_datasets())  # what needs the classifier
    listed += [("train_classifier", {"dataset": d.name}) for d in cfg.datasets if d.name in scored]
    listed += [("evaluate", {"dataset": d, "model": m, "sampler": s}) for d, m, s in cfg.sampled()]
    listed += [("stepaware", {"dataset": d, "study": s}) for d, s in cfg.stepaware_runs()]
    out = []
    for rule, wildcards in listed:
        work = work_of(cfg, rule, wildcards)
        seconds = estimate_seconds(cfg, rule, wildcards, gpu, work)
        source, peak = "stated", None
        measured = _measured(cfg, rule, wildcards, work, rates) if rates is not None and gpu else None
        if measured is not None:
            seconds, peak = measured
            source = f"measured ({rates.device})"
        out.append(Job(rule, wildcards, seconds, runtime_minutes(cfg, rule, wildcards, gpu, work),
                       memory_mb(cfg, rule, wildcards, gpu), gpus(cfg, rule, wildcards, gpu), source, peak))
    return out


def _measured(
    cfg: Any, rule: str, wildcards: dict[str, str], work: Work, rates: Rates
) -> tuple[float, float | None] | None:
    """Device-seconds (and measured peak MiB) of a training or sampling job (its ``work``) from ``rates``."""
    if rule not in ("train", "sample"):
        return None
    spec = cfg.model(wildcards["model"])
    shape = _shape(cfg, wildcards["dataset"])
    key = (spec.arch, spec.preset, "x".join(map(str, shape)))
    if rule == "train":
        if key not in rates.train:
            return None
        images_per_s, peak = rates.train[key]
        recipe = cfg.train_for(spec.name)
        return STARTUP_SECONDS + recipe.steps * recipe.batch_size / images_per_s, peak
    if key not in rates.call:
        return None
    images_through_calls = work.forward_values / image_values(shape)  # samples x network calls (samplers.work)
    return STARTUP_SECONDS + images_through_calls * rates.call[key], None


def read_rates(paths: Iterable[str | Path], device: str | None = None) -> Rates | None:
    """Measured rates from ``missingu bench`` CSVs (rows with ``status`` ok), of ``device`` (a
    device name as the rows spell it; default: the device of the first row); ``None`` if none.
    Training: the fastest variant of each model; sampling: seconds per image per network call
    at the largest batch."""
    train_rows: dict[tuple[str, str, str], tuple[float, float | None]] = {}
    call_rows: dict[tuple[str, str, str], tuple[int, float]] = {}
    files = []
    for path in paths:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        used = False
        for row in rows:
            name = row.get("device_name") or row.get("device") or ""
            if row.get("status", "ok") != "ok" or not row.get("arch") or not row.get("shape"):
                continue
            device = device or name
            if name != device:
                continue
            key = (row["arch"], row["preset"], row["shape"])
            if row.get("part") == "train" and row.get("images_per_s"):
                rate = float(row["images_per_s"])
                peak = float(row["train_peak_mib"]) if row.get("train_peak_mib") else None
                if key not in train_rows or rate > train_rows[key][0]:
                    train_rows[key] = (rate, peak)
                used = True
            elif row.get("part") == "sample" and row.get("s_per_image") and row.get("network_calls"):
                batch = int(row["batch"])
                per_call = float(row["s_per_image"]) / float(row["network_calls"])
                if key not in call_rows or batch > call_rows[key][0] or (
                        batch == call_rows[key][0] and per_call < call_rows[key][1]):
                    call_rows[key] = (batch, per_call)
                used = True
        if used:
            files.append(str(path))
    if not files:
        return None
    return Rates(device or "", train_rows, {k: v[1] for k, v in call_rows.items()}, tuple(files))


def uses_gpu(device: str) -> bool:
    """Whether jobs of a config with this ``device`` run on GPUs: ``cuda``/``cuda:N``, or ``auto``
    where ``nvidia-smi`` is found (decided without starting CUDA: where Snakemake plans, too)."""
    if device == "auto":
        return shutil.which("nvidia-smi") is not None
    return device.startswith("cuda")


def device_name() -> str | None:
    """This machine's CUDA device name, as the benchmark rows spell it; ``None`` without CUDA."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def measured_files(root: str | Path = "results") -> list[Path]:
    """The benchmark CSVs a plan may take measured rates from: ``results/measured/*/bench*.csv`` and
    the pipeline's own ``results/profile/bench.csv``."""
    root = Path(root)
    return sorted((root / "measured").glob("*/bench*.csv")) + sorted((root / "profile").glob("bench.csv"))


def summary(plan: Sequence[Job], devices: int = 1) -> dict[str, Any]:
    """Totals per stage and overall (a job's device-hours are over all the devices it holds; jobs
    that hold no GPU count apart as CPU-hours when others do), the wall time on ``devices``
    devices (at least the total over ``devices`` and the longest chain of dependent jobs), and
    the largest job by memory."""
    stages: dict[str, dict[str, float]] = {}
    for job in plan:
        row = stages.setdefault(job.stage, {"jobs": 0, "hours": 0.0, "runtime_hours": 0.0})
        row["jobs"] += 1
        row["hours"] += job.seconds / 3600
        row["runtime_hours"] += job.runtime_minutes * max(1, job.gpus) / 60
    on_gpu = any(job.gpus for job in plan)
    total = sum(job.seconds for job in plan if job.gpus or not on_gpu) / 3600
    cpu_only = sum(job.seconds for job in plan if on_gpu and not job.gpus) / 3600
    by_key = {(job.rule, tuple(sorted(job.wildcards.items()))): job for job in plan}

    def hours(rule: str, **wildcards: str) -> float:
        job = by_key.get((rule, tuple(sorted(wildcards.items()))))
        return 0.0 if job is None else job.seconds / 3600 / max(1, job.gpus)

    chain = 0.0  # prepare -> train -> sample -> evaluate, the longest such path
    for job in plan:
        if job.rule == "evaluate":
            d, m, s = job.wildcards["dataset"], job.wildcards["model"], job.wildcards["sampler"]
            chain = max(chain, hours("prepare_data", dataset=d, split="train") + hours("train", dataset=d, model=m)
                        + hours("sample", dataset=d, model=m, sampler=s) + hours("evaluate", dataset=d, model=m,
                                                                                 sampler=s))
    chain = max([chain, *(job.seconds / 3600 / max(1, job.gpus) for job in plan)])
    largest = max(plan, key=lambda job: (job.mem_mb, job.seconds)) if plan else None
    return {"stages": stages, "total_hours": total, "cpu_hours": cpu_only,
            "wall_hours": max(total / max(1, devices), chain),
            "devices": devices, "largest": largest,
            "peak_mib": max((job.peak_mib for job in plan if job.peak_mib is not None), default=None)}


def _hours(value: float) -> str:
    if value < 1:
        return f"{value * 60:.1f} min"
    return f"{value:,.1f} h"


def format_plan(plan: Sequence[Job], gpu: bool, devices: int = 1, rates: Rates | None = None,
                per_job: bool = True) -> str:
    """The plan as text: the job table (``per_job``), the totals per stage, overall and on
    ``devices`` devices, the largest job, and where the estimates come from."""
    unit = "GPU" if gpu else "CPU"
    lines = []
    if per_job:
        lines.append(f"{'rule':<17} {'job':<40} {unit + '-minutes':>12} {'asks':>9} {'mem MB':>8}  estimate")
        for job in plan:
            lines.append(f"{job.rule:<17} {job.name or '-':<40} {job.seconds / 60:>12.1f} "
                         f"{job.runtime_minutes:>6} min {job.mem_mb:>8}  {job.source}")
        lines.append("")
    report = summary(plan, devices)
    lines.append(f"{'stage':<12} {'jobs':>5} {unit + '-hours':>12} {'asked (SLURM)':>14}")
    for stage, row in report["stages"].items():
        lines.append(f"{stage:<12} {int(row['jobs']):>5} {row['hours']:>12.2f} {row['runtime_hours']:>12.1f} h")
    lines.append(f"{'total':<12} {len(plan):>5} {report['total_hours']:>12.2f}"
                 + (f"   (+ {report['cpu_hours']:.2f} CPU-hours of data preparation)" if report["cpu_hours"] else ""))
    where = f"{devices} {unit}{'s' if devices > 1 else ''}" if gpu else f"{devices} machine{'s' if devices > 1 else ''}"
    lines.append(f"wall time on {where}: about {_hours(report['wall_hours'])} "
                 f"(total over devices, or the longest chain of dependent jobs)")
    largest = report["largest"]
    if largest is not None:
        lines.append(f"largest job: {largest.rule} {largest.name or ''} asks {largest.mem_mb:,} MB of host memory"
                     + (f"; a training step measured {report['peak_mib']:,.0f} MiB on the device"
                        if report["peak_mib"] is not None else ""))
    stated = (f"stated throughput {THROUGHPUT['gpu' if gpu else 'cpu']:.0e} image values/s of training "
              f"(missingu.plan.THROUGHPUT)")
    if rates is not None and gpu:
        lines.append(f"estimates: measured on {rates.device} ({', '.join(rates.files)}) for training and "
                     f"sampling where it has the model and shape; else {stated}")
    else:
        lines.append(f"estimates: {stated}; no measured benchmark of this device")
    lines.append("(plus the notebooks, the claims table and the report, minutes each, where Snakemake runs)")
    return "\n".join(lines)


def write_plan(plan: Sequence[Job], path: str | Path) -> None:
    """The job table as CSV."""
    from .io import write_rows

    write_rows([{"stage": job.stage, "rule": job.rule, "job": job.name, "hours": job.seconds / 3600,
                 "runtime_minutes": job.runtime_minutes, "mem_mb": job.mem_mb, "gpus": job.gpus,
                 "source": job.source} for job in plan], path)


__all__ = [
    "FIXED_MINUTES", "MARGIN", "MEMORY", "THROUGHPUT", "Job", "Rates", "device_name", "format_plan", "gpus", "jobs",
    "measured_files", "memory_mb", "uses_gpu", "read_rates", "runtime_minutes", "stated_seconds", "summary", "work_of",
    "write_plan",
]
