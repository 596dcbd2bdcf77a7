# Config validation, wildcard values and input/param functions. The only Python of the workflow.

import functools
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate


# The whole config is checked before any job: first against the schema (which also fills the
# defaults), then by the library's own parser, which knows what a schema cannot (image sizes a
# model can halve, group counts that divide widths, unique names, DDIM steps <= timesteps).
validate(config, schema="../schemas/config.schema.yaml")
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
try:
    from missingu.config import ConfigError
    from missingu.experiment import parse_experiment
except ModuleNotFoundError as err:
    raise WorkflowError(
        f"The config can only be checked with the missingu package ({err}); install it where Snakemake "
        f"runs: pip install -e '.[pipeline]'"
    ) from None
try:
    EXPERIMENT = parse_experiment(json.loads(json.dumps(config)))  # as the jobs receive it: JSON
except ConfigError as err:
    raise WorkflowError(f"Error validating config: {err}") from None


def _names(key):
    return [entry["name"] for entry in config.get(key, [])]


def _one_of(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(map(re.escape, names)) or "NONE"


DATASETS = _names("datasets")
MODELS = _names("models")
SAMPLERS = _names("samplers")

wildcard_constraints:
    dataset=_one_of(DATASETS),
    model=_one_of(MODELS),
    sampler=_one_of(SAMPLERS),
    split="train|test",


# Jobs run `python -m missingu.cli ...` with this checkout's src/ first on PYTHONPATH. With
# --use-conda (or --sdm conda) `python` is the rule's conda env; otherwise the interpreter running
# Snakemake is put first on PATH, so an unactivated .venv/bin/snakemake works too.
def _prepend(var, path):
    parts = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != path]
    os.environ[var] = os.pathsep.join([path, *parts])


_prepend("PYTHONPATH", os.path.join(workflow.basedir, "src"))
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _prepend("PATH", os.path.dirname(sys.executable))
ENV = "../../environment.yml"


def _wants_gpu():
    device = config.get("device", "auto")
    if device == "auto":
        return shutil.which("nvidia-smi") is not None
    return device.startswith("cuda")


# Rules that train or sample ask for one GPU when the config will use one; the default profile
# caps `gpu` at 1, so two such jobs never share a GPU. On a CPU they ask for none and run side by side.
# (SLURM partition and account are resources of the slurm workflow profile, not of the config.)
GPU = 1 if _wants_gpu() else 0


# Resources follow the experiment: memory grows with the dataset a job holds, and GPU jobs add
# room for the CUDA context. Under the slurm executor a job no node could ever run is an error
# before anything is submitted, instead of a job left pending in silence.
def _slurm_nodes():
    """(CPUs, memory MB) of every node `sinfo` lists, when Snakemake submits to SLURM; else None."""
    plugin = workflow.executor_plugin
    if plugin is None or getattr(plugin, "name", "") != "slurm":
        return None
    return _sinfo_nodes()


@functools.cache
def _sinfo_nodes():
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkflowError(f"sinfo failed ({proc.stderr.strip()}): cannot check job sizes against the cluster")
    return [tuple(int(v.rstrip("+")) for v in line.split()) for line in proc.stdout.splitlines() if line.strip()]


def memory(rule, base_mb, per_data_mb=0.0, gpu_mb=4000):
    """The `mem_mb` resource of a rule: `base_mb`, plus `per_data_mb` per MB of the job's
    training split, plus `gpu_mb` when the job asks for a GPU; checked against the SLURM nodes."""

    def mem_mb(wildcards, threads):
        data_mb = EXPERIMENT.dataset(wildcards.dataset).train_bytes / 1e6 if hasattr(wildcards, "dataset") else 0
        value = int(base_mb + per_data_mb * data_mb + (gpu_mb if GPU else 0))
        nodes = _slurm_nodes()
        if nodes is not None and not any(cpus >= threads and mem >= value for cpus, mem in nodes):
            sizes = ", ".join(f"{cpus} CPUs / {mem} MB" for cpus, mem in sorted(set(nodes)))
            raise WorkflowError(
                f"rule {rule} needs {threads} CPUs and {value} MB, but no node of this SLURM cluster has "
                f"that ({sizes}): it would stay pending. Lower it (--set-threads {rule}=N, "
                f"--set-resources {rule}:mem_mb=M) or run on a larger partition."
            )
        return value

    return mem_mb


def train_processes(wildcards):
    """Processes (and CPUs) of a training job: `train.gpus`, one GPU each on CUDA (torchrun)."""
    return EXPERIMENT.train.gpus


def train_gpus(wildcards):
    """GPUs of a training job: one per process when the config trains on CUDA."""
    return GPU * EXPERIMENT.train.gpus


def _entry(key, name):
    return next(e for e in config[key] if e["name"] == name)


def _cli_config(datasets, models, samplers=(), sections=(), shared=("seed", "device")):
    """The config a step depends on, as shell-quoted JSON: Snakemake reruns a step exactly
    when one of these entries changes (its params change)."""
    data = {key: config[key] for key in (*shared, *sections) if key in config}
    data["datasets"] = [_entry("datasets", name) for name in datasets]
    data["models"] = [_entry("models", name) for name in models]
    data["samplers"] = [_entry("samplers", name) for name in samplers]
    return shlex.quote(json.dumps(data, sort_keys=True))


def data_config(wildcards):
    """A dataset's entry only: seed and device do not change the prepared images."""
    return _cli_config([wildcards.dataset], [], shared=())


def train_config(wildcards):
    return _cli_config([wildcards.dataset], [wildcards.model], sections=("diffusion", "train"))


def profile_config(wildcards):
    """Every dataset and model (the profile covers them all) and the profile settings."""
    return _cli_config(DATASETS, MODELS, sections=("diffusion", "profile"))


def checkpoint_args(wildcards):
    """`--checkpoint dataset/model=path` for every trained model, so the profile uses trained
    weights at each dataset's shape (the same paths as `train_outputs()`)."""
    return " ".join(
        shlex.quote(f"--checkpoint={d}/{m}={path}")
        for (d, m), path in zip(itertools.product(DATASETS, MODELS), train_outputs("model"))
    )


def all_cores(wildcards):
    """Every core of the run, so no other job runs beside the profile while it times; 1 where
    none is set (`--report`, `--lint`)."""
    try:
        return workflow.cores
    except WorkflowError:  # no --cores given
        return 1


def sample_config(wildcards):
    return _cli_config([wildcards.dataset], [wildcards.model], [wildcards.sampler], sections=("sample",))


def prepared(split):
    """The prepare_data output of one split, for every dataset (wildcard `dataset` left open)."""
    return expand(rules.prepare_data.output[0], split=split, allow_missing=True)[0]


def train_outputs(what="model"):
    """One output of the train rule (`model`, `loss`, `record`) for every dataset and model."""
    return expand(getattr(rules.train.output, what), dataset=DATASETS, model=MODELS)


def sample_outputs(what):
    """One output of the sample rule (`images`, `summary`, `grid`) for every combination."""
    return expand(getattr(rules.sample.output, what), dataset=DATASETS, model=MODELS, sampler=SAMPLERS)


def _records(keys, **paths):
    """Notebook parameters: one dict per combination of wildcard values, with its file paths."""
    values = {"dataset": DATASETS, "model": MODELS, "sampler": SAMPLERS}
    combos = [dict(zip(keys, v)) for v in itertools.product(*(values[k] for k in keys))]
    return [{**c, **{key: path.format(**c) for key, path in paths.items()}} for c in combos]


def notebook_parameters(wildcards):
    """Papermill parameters of the results notebook, as shell-quoted JSON."""
    train, sample = rules.train.output, rules.sample.output
    params = {
        "runs": _records(("dataset", "model"), loss_csv=train.loss, record=train.record),
        "samples": _records(("dataset", "model", "sampler"), summary=sample.summary, grid=sample.grid),
        "tables_dir": "results/tables",
        "figures_dir": "results/figures",
    }
    return shlex.quote(json.dumps(params))


def efficiency_parameters(wildcards):
    """Papermill parameters of the efficiency notebook, as shell-quoted JSON."""
    params = {
        "profile_csv": "results/profile/efficiency.csv",
        "claims_yaml": os.path.join(workflow.basedir, "config", "paper_claims.yaml"),
        "tables_dir": "results/tables",
        "figures_dir": "results/figures",
    }
    return shlex.quote(json.dumps(params))


def final_outputs():
    return [
        *train_outputs("model"),
        *sample_outputs("grid"),
        *expand("results/notebooks/{name}.{ext}", name=["results", "efficiency"], ext=["ipynb", "html"]),
    ]


def notebook(name):
    """Path of a source notebook in this checkout (works with --directory elsewhere)."""
    return os.path.join(workflow.basedir, "notebooks", f"{name}.ipynb")


# Run a notebook with papermill; the executed copy is a log first (kept when the notebook fails).
PAPERMILL = (
    "python -m papermill {input.notebook} {log.notebook} -k python3 --cwd . -y {params.parameters}"
    " 2> {log.stderr} && cp {log.notebook} {output.notebook}"
)
