# What every stage shares: the config checked before any job, the experiment, wildcards, the
# environment jobs run in, the config slice each rule depends on, the one table of result paths
# and the final outputs. SLURM sizing is in resources.smk; each stage's rules, input functions and
# notebook declaration are in its own <stage>.smk.

import json
import os
import re
import shlex
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
    from missingu.io import sidecars
    from missingu.weights import DEFAULT_TORCH_HOME
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
    study=_one_of(dict.fromkeys(s for _, s in EXPERIMENT.stepaware_runs())),
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
# Where metric weights are staged (TORCH_HOME of every metric job): missingu.weights' default.
TORCH_HOME = str(DEFAULT_TORCH_HOME)
# The papers' claims, read by every stage that judges them and by the claims table.
CLAIMS_FILE = os.path.join(workflow.basedir, "config", "paper_claims.yaml")

# Where every stage writes, the one table of result paths. The rules' outputs are these stems
# with their suffixes, and a rule names another's outputs through `rules.<name>.output`.
RESULTS = {
    "data": "results/data/{dataset}/{split}",
    "weights": TORCH_HOME,
    "train": "results/train/{dataset}/{model}",
    "sample": "results/samples/{dataset}/{model}/{sampler}",
    "profile": "results/profile/efficiency",
    "bench": "results/profile/bench",
    "denoise": "results/denoise/{dataset}/{model}",
    "classifier": "results/classifier/{dataset}/classifier",
    "evaluate": "results/quality/{dataset}/{model}/{sampler}",
    "stepaware": "results/stepaware/{dataset}/{study}",
    "tables": "results/tables",
    "figures": "results/figures",
    "notebooks": "results/notebooks",
    "report": "results/report.html",
}


def beside(main, suffixes):
    """The sidecar outputs of a command (its stage's SIDECARS) beside its main output `main`."""
    return {name: str(path) for name, path in sidecars(main, suffixes).items()}


def _entry(key, name, within):
    """Config entry `name` of list `key`; a model entry's `datasets` and `samplers` keep only the
    names `within` the slice (so adding a dataset to a model's list reruns none of its other jobs),
    and its `train` recipe is kept only where the slice holds the `train` section."""
    entry = next(e for e in config[key] if e["name"] == name)
    if key != "models":
        return entry
    entry = dict(entry)
    if "train" not in within["sections"]:  # its recipe matters to its training alone
        entry.pop("train", None)
    for field in ("datasets", "samplers"):
        if entry.get(field) is not None:
            entry[field] = [n for n in entry[field] if n in within[field]] or None
    return entry


def config_slice(*, datasets=("{dataset}",), models=(), samplers=(), sections=(), shared=("seed", "device"),
                 extra=None):
    """The `params` function of the config a rule depends on, as shell-quoted JSON (its
    `--config-json`): the named dataset, model and sampler entries (a name in braces is the job's
    wildcard, "{model}"), the config `sections`, the `shared` keys and the sections `extra(wildcards)`
    returns. Snakemake reruns a job exactly when one of these entries changes (its params change)."""

    def pick(names, wildcards):
        return [getattr(wildcards, n[1:-1]) if n.startswith("{") else n for n in names]

    def params(wildcards):
        data = {key: config[key] for key in (*shared, *sections) if key in config}
        within = {"datasets": pick(datasets, wildcards), "samplers": pick(samplers, wildcards), "sections": sections}
        for key, names in (("datasets", within["datasets"]), ("models", pick(models, wildcards)),
                           ("samplers", within["samplers"])):
            data[key] = [_entry(key, name, within) for name in names]
        data.update(extra(wildcards) if extra else {})
        return shlex.quote(json.dumps(data, sort_keys=True))

    return params


def flags(option, names, paths):
    """`--option=name=path` for each pair, shell-quoted (repeatable CLI options such as --checkpoint)."""
    return " ".join(shlex.quote(f"--{option}={name}={path}") for name, path in zip(names, paths))


def prepared(split):
    """The prepare_data output of one split, for every dataset (wildcard `dataset` left open)."""
    return expand(rules.prepare_data.output[0], split=split, allow_missing=True)[0]


def over(pattern, keys=("dataset", "model")):
    """`pattern` for every combination of the wildcards `keys` the experiment runs: its matrix
    (each model on its datasets, with its samplers; never the cross product)."""
    return [pattern.format(**combo) for combo in EXPERIMENT.matrix(keys)]


def records(keys, combos=None, **paths):
    """Notebook parameters: one dict per combination of wildcard values (`combos`, default the
    experiment's matrix over `keys`), with its file paths."""
    combos = EXPERIMENT.matrix(keys) if combos is None else combos
    return [{**c, **{key: path.format(**c) for key, path in paths.items()}} for c in combos]


# Each stage with an analysis notebook declares it here, and notebooks.smk makes one job of each:
# NOTEBOOKS[stage] = {"input": {...}, "output": {...}, "parameters": {...}}; its `parameters` are
# the notebook's paths, and every notebook also gets `tables_dir` and `figures_dir`.
NOTEBOOKS = {}


def final_outputs():
    """What `snakemake` makes by default: trained models, sample grids, every executed notebook
    (and its HTML) and the claims table."""
    return [
        *over(rules.train.output.model),
        *over(rules.sample.output.grid, ("dataset", "model", "sampler")),
        *expand(f"{RESULTS['notebooks']}/{{name}}.{{ext}}", name=NOTEBOOKS, ext=["ipynb", "html"]),
        *rules.claims.output,
    ]
