"""The repository's promises: schema and package agree, every key is documented, CI runs the
README's test command."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from missingu.bench import BenchConfig
from missingu.classifier import ClassifierConfig
from missingu.config import to_dict
from missingu.data import SOURCES, DatasetSpec
from missingu.denoise import DenoiseConfig
from missingu.diffusion import SCHEDULES, DiffusionConfig
from missingu.evaluate import EvaluateConfig
from missingu.experiment import ExperimentConfig, SampleConfig, load_experiment
from missingu.models import ARCHITECTURES, ModelSpec
from missingu.models.ode_block import SOLVERS
from missingu.profile import ProfileConfig
from missingu.samplers import SAMPLERS, SamplerSpec
from missingu.speed import SpeedConfig
from missingu.stepaware import StepAwareConfig
from missingu.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
SECTIONS = {
    "diffusion": DiffusionConfig, "train": TrainConfig, "sample": SampleConfig, "profile": ProfileConfig,
    "denoise": DenoiseConfig, "evaluate": EvaluateConfig, "speed": SpeedConfig, "bench": BenchConfig,
    "stepaware": StepAwareConfig,
}
ITEMS = {"datasets": DatasetSpec, "models": ModelSpec, "samplers": SamplerSpec}


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


def _default(field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return dataclasses.MISSING
    return to_dict(value)


def test_schema_top_level_matches_package():
    assert set(SCHEMA["properties"]) == set(_fields(ExperimentConfig))


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_sections_match_dataclasses(section):
    props = SCHEMA["properties"][section]["properties"]
    fields = _fields(SECTIONS[section])
    assert set(props) == set(fields)
    for name, field in fields.items():
        assert props[name]["default"] == _default(field), f"{section}.{name}"


def test_schema_of_the_classifier_matches_its_dataclass():
    props = SCHEMA["properties"]["evaluate"]["properties"]["classifier"]["properties"]
    fields = _fields(ClassifierConfig)
    assert set(props) == set(fields)
    for name, field in fields.items():
        assert props[name]["default"] == _default(field), f"evaluate.classifier.{name}"


@pytest.mark.parametrize("key", sorted(ITEMS))
def test_schema_list_items_match_dataclasses(key):
    item = SCHEMA["properties"][key]["items"]
    fields = _fields(ITEMS[key])
    assert set(item["properties"]) == set(fields)
    for name, field in fields.items():
        default = _default(field)
        if default is dataclasses.MISSING:
            assert name in item["required"], f"{key}[].{name}"
        else:
            assert item["properties"][name]["default"] == default, f"{key}[].{name}"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_schema_model_options_match_architectures(arch):
    props = SCHEMA["$defs"][f"{arch}_options"]["properties"]
    assert set(props) == set(_fields(ARCHITECTURES[arch].config_cls))


def test_schema_model_recipe_keys_are_the_train_sections():
    """A model's ``train:`` may carry exactly the keys of the ``train`` section."""
    recipe = SCHEMA["properties"]["models"]["items"]["properties"]["train"]
    assert set(recipe["propertyNames"]["enum"]) == set(_fields(TrainConfig))


def test_schema_enums_match_registries():
    p = SCHEMA["properties"]
    assert set(p["diffusion"]["properties"]["schedule"]["enum"]) == set(SCHEDULES)
    assert set(p["datasets"]["items"]["properties"]["source"]["enum"]) - {None} == set(SOURCES)
    assert set(p["models"]["items"]["properties"]["arch"]["enum"]) == set(ARCHITECTURES)
    presets = {name for a in ARCHITECTURES.values() for name in a.presets}
    assert set(p["models"]["items"]["properties"]["preset"]["enum"]) == presets
    assert set(p["samplers"]["items"]["properties"]["kind"]["enum"]) == set(SAMPLERS)
    assert set(p["samplers"]["items"]["properties"]["method"]["enum"]) == set(SOLVERS)
    assert set(SCHEMA["$defs"]["cunet_options"]["properties"]["solver"]["enum"]) == set(SOLVERS)


def test_every_key_is_documented_in_config_readme():
    text = (ROOT / "config/README.md").read_text()
    keys = set(_fields(ExperimentConfig))
    for cls in [*SECTIONS.values(), *ITEMS.values(), *(a.config_cls for a in ARCHITECTURES.values())]:
        keys |= set(_fields(cls))
    missing = sorted(k for k in keys if f"`{k}`" not in text and f"`{k}[]`" not in text)
    assert not missing, f"config/README.md does not document {missing}"


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "paper_lite.yaml", "gpu_smoke.yaml", "photos.yaml",
                                  "smoke.yaml"])
def test_config_files_are_valid_for_the_package(name):
    cfg = load_experiment(ROOT / "config" / name)
    assert cfg.datasets and cfg.models and cfg.samplers


# Defaults config/README.md states in words, not as one value (checked by hand, listed so a new one is seen).
PROSE_DEFAULTS = {"profile.samplers", "profile.counts", "bench.sampler"}


def _readme_defaults() -> dict[str, str]:
    """``section.key`` -> the default cell of every `| key | default | meaning |` table of config/README.md
    (``datasets[].name``, top-level keys without a section, ``evaluate.classifier.steps``...)."""
    out, section, in_table = {}, "", False
    for line in (ROOT / "config/README.md").read_text().splitlines():
        heading = re.match(r"## (?:`(\w+)(\[\])?`|Top level)", line)
        if heading:
            section = "" if heading.group(1) is None else heading.group(1) + (heading.group(2) or "")
            in_table = False
        elif line.startswith("| key | default |"):
            in_table = True
        elif in_table and line.startswith("| `"):
            key, default = (c.strip() for c in line.strip("|").split("|")[:2])
            out[f"{section}.{key.strip('`')}" if section else key.strip("`")] = default
        elif not line.startswith("|"):
            in_table = False
    return out


def _schema_default(dotted: str):
    node, parts = SCHEMA, dotted.replace("[]", "").split(".")
    for part in parts[:-1]:
        node = node["properties"][part]
        node = node.get("items", node)
    return node, parts[-1]


def test_config_readme_states_the_schemas_defaults():
    stated = _readme_defaults()
    assert len(stated) > 80, "the parser found too few rows"
    checked = 0
    for dotted, cell in stated.items():
        node, key = _schema_default(dotted)
        if cell == "required":
            assert key in node.get("required", []), dotted
            continue
        if dotted in PROSE_DEFAULTS:
            assert not cell.startswith("`"), f"{dotted}: now a value; compare it"
            continue
        assert cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2, f"{dotted}: {cell}"
        value = yaml.safe_load(cell.strip("`"))
        assert value == node["properties"][key]["default"], f"{dotted}: README {value!r}, schema " \
            f"{node['properties'][key]['default']!r}"
        checked += 1
    assert checked > 80


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_command = next(b.strip() for b in blocks if "pytest" in b)
    assert test_command in (ROOT / ".ci/run").read_text()


def test_conda_environment_lists_the_package_dependencies():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["pipeline"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == wanted


def test_schema_name_pattern_is_the_package_one():
    from missingu.config import NAME_PATTERN

    for key in ITEMS:
        assert SCHEMA["properties"][key]["items"]["properties"]["name"]["pattern"] == NAME_PATTERN


def test_schema_device_pattern_is_the_package_one():
    from missingu.experiment import DEVICE

    assert SCHEMA["properties"]["device"]["pattern"] == f"^({DEVICE.pattern})$"


def test_the_gpu_wheels_are_what_the_gpu_image_lacks_with_their_extras():
    """scripts/gpu_wheels.py carries the project's requirements the GPU image does not hold."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "scripts" / "gpu_wheels.py")
    wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheels)
    image = wheels.image_packages()
    assert {"torch", "numpy", "scikit-image", "torchmetrics"} <= image
    pins = wheels.closure(wheels.project_requirements(), image)
    assert {"snakemake", "papermill", "nbconvert", "ipykernel", "pymoo", "lpips", "torch-fidelity",
            "torchode", "denoising-diffusion-pytorch"} <= set(pins)
    assert "tinycss2" in pins  # nbconvert needs bleach[css]: an extra's requirement is carried too
    assert not set(pins) & image
    assert "tinycss2" not in wheels.closure(["bleach"], image)  # negative control: no extra, no tinycss2
