# SLURM sizing: the threads, memory, GPUs and runtime each job asks for, from the experiment, and
# the check of every job against the cluster's nodes before the first is submitted.

import functools
import subprocess

import missingu.plan


# Rules that train or sample ask for one GPU when the config will use one; the default profile
# caps `gpu` at 1, so two such jobs never share a GPU. On a CPU they ask for none and run side by side.
# (SLURM partition and account are resources of the slurm workflow profile, not of the config.)
GPU = 1 if missingu.plan.uses_gpu(config.get("device", "auto")) else 0


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


def memory(rule):
    """The `mem_mb` resource of a job (missingu.plan.memory_mb: a base, more per MB of the job's
    training split and on a GPU); checked against the SLURM nodes."""

    def mem_mb(wildcards, threads):
        value = missingu.plan.memory_mb(EXPERIMENT, rule, dict(wildcards.items()), bool(GPU))
        nodes = _slurm_nodes()
        if nodes is not None and not any(n["cpus"] >= threads and n["mem"] >= value for n in nodes):
            raise _unschedulable(rule, f"{threads} CPUs and {value} MB", nodes,
                                 lambda n: f"{n['cpus']} CPUs / {n['mem']} MB",
                                 f"--set-threads {rule}=N, --set-resources {rule}:mem_mb=M")
        return value

    return mem_mb


# Runtime and memory follow the work: missingu.plan sizes every job (its stage library's
# `work(...)` at the stated throughput, MARGIN times over, at least 10 minutes, plus 10 minutes per
# timed measurement; host memory from the dataset a job holds, more on a GPU), and `missingu plan`
# prints the same numbers before a run. The paper config's training (500k steps of 128 images at
# 64x64x3) asks 2,622 minutes; on a partition with a shorter limit, ask for that limit and raise
# --retries: a job the cluster stops resumes from its checkpoint.
def runtime(rule):
    """The `runtime` resource (minutes) of a rule's job, from missingu.plan; checked against the
    SLURM partitions' time limits."""

    def value(wildcards):
        asked = missingu.plan.runtime_minutes(EXPERIMENT, rule, dict(wildcards.items()), bool(GPU))
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


def longest_first(rule):
    """A job's `priority`: its planned seconds, so that among the jobs of a rule ready at once the
    longest starts first (three trainings on two cores: the two longest together)."""
    return lambda wildcards: int(missingu.plan.estimate_seconds(EXPERIMENT, rule, dict(wildcards.items()), bool(GPU)))


def train_processes(wildcards):
    """Processes (and CPUs) of a training job: its recipe's `train.gpus`, one GPU each on CUDA (torchrun)."""
    return missingu.plan.processes(EXPERIMENT, "train", dict(wildcards.items()))


def train_gpus(wildcards):
    """GPUs of a training job: one per process when the config trains on CUDA."""
    return missingu.plan.gpus(EXPERIMENT, "train", dict(wildcards.items()), bool(GPU))


# Rules that time what they run (profile, bench) take every core, so no other job runs beside
# them. Locally that is --cores. Under SLURM this one function decides for every such rule, the
# same where the job is submitted and where it runs: it is submitted for SLURM_ALL_CORES CPUs (at
# most a node's), and inside the job it takes the CPUs SLURM gave it (SLURM_CPUS_PER_TASK).
SLURM_ALL_CORES = 4


def all_cores(wildcards):
    """Every core of the run (see above); 1 where none is set (`--report`, `--lint`)."""
    plugin = getattr(workflow.executor_plugin, "name", "")
    if plugin == "slurm-jobstep":
        return int(os.environ.get("SLURM_CPUS_PER_TASK", 1))
    if plugin == "slurm":
        return min(SLURM_ALL_CORES, max(n["cpus"] for n in _sinfo_nodes()))
    try:
        return workflow.cores
    except WorkflowError:  # no --cores given
        return 1


def plan_text():
    """The plan's totals for this run (measured rates where a benchmark of this machine's GPU exists)."""
    rates = None
    if GPU and (name := missingu.plan.device_name()):
        rates = missingu.plan.read_rates(missingu.plan.measured_files(), name)
    jobs = missingu.plan.jobs(EXPERIMENT, bool(GPU), rates)
    return f"Plan (missingu plan):\n{missingu.plan.format_plan(jobs, bool(GPU), rates=rates, per_job=False)}"
