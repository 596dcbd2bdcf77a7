# SLURM sizing: the threads, memory, GPUs and runtime each job asks for, from the experiment, and
# the check of every job against the cluster's nodes before the first is submitted.

import functools
import shutil
import subprocess

import missingu.bench
import missingu.classifier
import missingu.denoise
import missingu.evaluate
import missingu.profile
import missingu.samplers
import missingu.stepaware
import missingu.train
from missingu.diffusion import Diffusion


def _wants_gpu():
    device = config.get("device", "auto")
    if device == "auto":
        return shutil.which("nvidia-smi") is not None
    return device.startswith("cuda")


# Rules that train or sample ask for one GPU when the config will use one; the default profile
# caps `gpu` at 1, so two such jobs never share a GPU. On a CPU they ask for none and run side by side.
# (SLURM partition and account are resources of the slurm workflow profile, not of the config.)
GPU = 1 if _wants_gpu() else 0


# Resources follow the experiment: memory grows with the dataset a job holds, GPU jobs add room for
# the CUDA context, runtime grows with the work a job does. Under the slurm executor a job no node
# could ever run (CPUs with memory, GPUs, or a time limit) is an error before anything is
# submitted, instead of a job left pending in silence. Any of them can be overridden with
# --set-resources RULE:mem_mb=M / RULE:runtime=MIN and --set-threads RULE=N (or in a profile).
def _slurm_nodes():
    """The nodes `sinfo` lists (see `_sinfo_nodes`) when Snakemake submits to SLURM; else None."""
    plugin = workflow.executor_plugin
    if plugin is None or getattr(plugin, "name", "") != "slurm":
        return None
    return _sinfo_nodes()


def _minutes(limit):
    """A SLURM time limit (`infinite`, `MM`, `MM:SS`, `HH:MM:SS`, `D-HH[:MM[:SS]]`) in minutes;
    None when unlimited."""
    if limit in ("infinite", "UNLIMITED", "n/a", "NONE"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(v) for v in clock.split(":")]
    if days:
        parts += [0] * (3 - len(parts))  # D-HH, D-HH:MM
        h, m, sec = parts
    else:
        h, m, sec = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + h * 60 + m + (sec > 0)


def _gpus(gres):
    """GPUs in a `sinfo %G` field such as `gpu:a100:4(S:0-1),shard:8` or `(null)`."""
    total = 0
    for item in gres.split(","):
        name, *rest = item.split("(")[0].split(":")
        if name == "gpu":
            total += int(rest[-1]) if rest and rest[-1].isdigit() else 1
    return total


@functools.cache
def _sinfo_nodes():
    """Every node of the cluster as a dict: cpus, mem (MB), minutes (its partition's time limit,
    None if unlimited) and gpus."""
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%c|%m|%l|%G"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkflowError(f"sinfo failed ({proc.stderr.strip()}): cannot check job sizes against the cluster")
    nodes = []
    for line in proc.stdout.splitlines():
        if line.strip():
            cpus, mem, limit, gres = line.strip().split("|")
            nodes.append({"cpus": int(cpus.rstrip("+")), "mem": int(mem.rstrip("+")), "minutes": _minutes(limit),
                          "gpus": _gpus(gres)})
    return nodes


def _unschedulable(rule, asked, nodes, largest, hint):
    sizes = ", ".join(sorted({largest(n) for n in nodes}, key=lambda v: [int(d) for d in re.findall(r"\d+", v)]))
    return WorkflowError(
        f"rule {rule} needs {asked}, but no node of this SLURM cluster has that "
        f"({sizes}): it would stay pending. Lower it ({hint}) or run on a larger partition."
    )


def memory(rule, base_mb, per_data_mb=0.0, gpu_mb=4000):
    """The `mem_mb` resource of a rule: `base_mb`, plus `per_data_mb` per MB of the job's
    training split, plus `gpu_mb` when the job asks for a GPU; checked against the SLURM nodes."""

    def mem_mb(wildcards, threads):
        data_mb = EXPERIMENT.dataset(wildcards.dataset).train_bytes / 1e6 if hasattr(wildcards, "dataset") else 0
        value = int(base_mb + per_data_mb * data_mb + (gpu_mb if GPU else 0))
        nodes = _slurm_nodes()
        if nodes is not None and not any(n["cpus"] >= threads and n["mem"] >= value for n in nodes):
            raise _unschedulable(rule, f"{threads} CPUs and {value} MB", nodes,
                                 lambda n: f"{n['cpus']} CPUs / {n['mem']} MB",
                                 f"--set-threads {rule}=N, --set-resources {rule}:mem_mb=M")
        return value

    return mem_mb


# Runtime follows the work: each stage's library states how much a job computes (its `work(...)`:
# image values through training steps and through forward calls, and timed measurements of fixed
# cost), and a job asks for that at the throughput below, MARGIN times over, at least 10 minutes,
# plus 10 minutes per fixed-cost measurement. Throughput in image values (H x W x C) per second
# of training: on 2 CPU cores, half of the ~100k per second measured for the embedded default
# (digits preset, 16x16x1, batch 64, 1,500 steps in 238-301 s); on a GPU 10 M per second, about
# 800 images/s at 64x64x3, where one H200 trained the paper presets at 911-1,359. A forward call
# costs about a third of a training step's image. The paper config's training (500k steps of 128
# images at 64x64x3) asks 2,622 minutes; on a partition with a shorter limit, ask for that limit
# and raise --retries: a job the cluster stops resumes from its checkpoint.
TRAIN_VALUES_PER_S = {False: 5e4, True: 1e7}
MARGIN = 2  # slower nodes, start-up, checkpoints


def minutes_of(work, parallel=1):
    """Minutes a job asks for its `work` (a missingu.task.Work), spread over `parallel` processes."""
    seconds = (work.train_values + work.forward_values / 3) / TRAIN_VALUES_PER_S[bool(GPU)] / max(1, parallel)
    return max(10, int(MARGIN * seconds / 60) + 1) + 10 * work.measurements


def _shape(dataset):
    spec = EXPERIMENT.dataset(dataset)
    return (spec.channels, spec.size, spec.size)


def train_minutes(wildcards):
    model = EXPERIMENT.model(wildcards.model).resolve()
    return minutes_of(missingu.train.work(EXPERIMENT.train, _shape(wildcards.dataset), model),
                      parallel=train_gpus(wildcards))


def sample_minutes(wildcards):
    spec, count = EXPERIMENT.sampler(wildcards.sampler), EXPERIMENT.sample.num_samples
    return minutes_of(missingu.samplers.work(spec, EXPERIMENT.diffusion.timesteps, count, _shape(wildcards.dataset)))


def denoise_minutes(wildcards):
    diffusion = Diffusion(EXPERIMENT.diffusion)
    return minutes_of(missingu.denoise.work(EXPERIMENT.denoise, diffusion, _shape(wildcards.dataset)))


def classifier_minutes(wildcards):
    return minutes_of(missingu.classifier.work(EXPERIMENT.evaluate.classifier, _shape(wildcards.dataset)))


def evaluate_minutes(wildcards):
    count = EXPERIMENT.sample.num_samples
    return minutes_of(missingu.evaluate.work(EXPERIMENT.evaluate, count, _shape(wildcards.dataset)))


def stepaware_minutes(wildcards):
    sa = EXPERIMENT.stepaware
    networks = len(EXPERIMENT.model(sa.model).resolve().widths) + len(sa.mix)
    spec, shape = EXPERIMENT.sampler(sa.sampler), _shape(wildcards.dataset)
    return minutes_of(missingu.stepaware.work(sa, spec, EXPERIMENT.diffusion.timesteps, networks, shape))


def profile_minutes(wildcards):
    return minutes_of(missingu.profile.work(EXPERIMENT))


def bench_minutes(wildcards):
    return minutes_of(missingu.bench.work(EXPERIMENT.bench))


def runtime(rule, minutes):
    """The `runtime` resource (minutes) of a rule, from `minutes(wildcards)` or a number;
    checked against the SLURM partitions' time limits."""

    def value(wildcards):
        asked = minutes(wildcards) if callable(minutes) else minutes
        nodes = _slurm_nodes()
        if nodes is not None and not any(n["minutes"] is None or n["minutes"] >= asked for n in nodes):
            raise _unschedulable(rule, f"{asked} minutes", nodes, lambda n: f"time limit {n['minutes']} min",
                                 f"--set-resources {rule}:runtime=MIN"
                                 + ("; with --retries N a training the cluster stops resumes from its checkpoint"
                                    if rule == "train" else ""))
        return asked

    return value


def gpus(rule, count):
    """The `gpu` resource of a rule, from `count(wildcards)` or a number; checked against the
    GPUs of the SLURM nodes."""

    def value(wildcards):
        asked = count(wildcards) if callable(count) else count
        nodes = _slurm_nodes()
        if asked and nodes is not None and not any(n["gpus"] >= asked for n in nodes):
            raise _unschedulable(rule, f"{asked} GPUs", nodes, lambda n: f"{n['gpus']} GPUs",
                                 "device: cpu, or fewer train.gpus")
        return asked

    return value


def check_every_job():
    """Work out every job's resources (and so check them against the nodes) before the first is
    submitted, so a training that fits no node stops the run before its data is prepared."""
    if _slurm_nodes() is not None:
        for job in workflow.dag.needrun_jobs():
            job.resources


def train_processes(wildcards):
    """Processes (and CPUs) of a training job: `train.gpus`, one GPU each on CUDA (torchrun)."""
    return EXPERIMENT.train.gpus


def train_gpus(wildcards):
    """GPUs of a training job: one per process when the config trains on CUDA."""
    return GPU * EXPERIMENT.train.gpus


def all_cores(wildcards):
    """Every core of the run, so no other job runs beside the profile while it times; 1 where
    none is set (`--report`, `--lint`)."""
    try:
        return workflow.cores
    except WorkflowError:  # no --cores given
        return 1
