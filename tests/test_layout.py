"""The layout: a stage is a set of files named after it (workflow/stages.yaml), stage modules do not
import each other, the library never imports Snakemake, the CLI or the report, and modules stay small."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from missingu.cli import COMMANDS
from missingu.cli import command as command_module
from missingu.experiment import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "missingu"
STAGES = yaml.safe_load((ROOT / "workflow/stages.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
# The stage modules: each a task with a config, run(...) and work(...); none imports another.
TASKS = ("profile", "bench", "denoise", "evaluate", "stepaware")
# Workflow files that are not a stage's: shared helpers, sizing, the notebook pattern, the end.
SHARED_RULES = {"common", "resources", "notebooks", "report"}


def _imports(path: Path) -> set[str]:
    """Modules of the package a file imports, as dotted names relative to ``missingu``."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
            found |= {n for n in names if n.startswith("missingu")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n.removeprefix("missingu.") for n in found if n.startswith("missingu")} | {
        n for n in found if not n.startswith("missingu")}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_its_files(stage):
    entry = STAGES[stage]
    assert (ROOT / "workflow/rules" / f"{stage}.smk").is_file()
    for module in entry["library"]:
        assert (PACKAGE / f"{module}.py").is_file(), module
    for command in entry["commands"]:
        assert (PACKAGE / "cli" / f"{command.replace('-', '_')}.py").is_file(), command
        assert command in COMMANDS, command
    if entry["notebook"]:
        assert (ROOT / "notebooks" / f"{stage}.ipynb").is_file()
        assert (PACKAGE / "report" / f"{stage}.py").is_file()
        captions = ROOT / "workflow/report" / stage
        assert captions.is_dir() and any(captions.glob("*.rst"))
    doc = ROOT / "docs" / f"{stage}.md"  # its reference: command, outputs, options, measured figures
    assert doc.is_file() and f"`docs/{stage}.md`" in (ROOT / "README.md").read_text()
    for command in entry["commands"]:
        assert f"missingu {command}" in doc.read_text(), f"docs/{stage}.md does not show `missingu {command}`"
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    for section in entry["config"]:
        assert section in fields and section in SCHEMA["properties"], section


def test_the_stage_list_is_what_the_workflow_and_the_notebooks_have():
    rules = {p.stem for p in (ROOT / "workflow/rules").glob("*.smk")}
    assert rules == set(STAGES) | SHARED_RULES
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks == {name for name, entry in STAGES.items() if entry["notebook"]}
    captions = {p.name for p in (ROOT / "workflow/report").iterdir() if p.is_dir()}
    assert captions == {name for name, entry in STAGES.items() if entry["notebook"]}
    reports = {p.stem for p in (PACKAGE / "report").glob("*.py")} - {"__init__", "common", "claims"}
    assert reports == {name for name, entry in STAGES.items() if entry["notebook"]}
    # the Snakefile includes the stages from the list, not by name
    snakefile = (ROOT / "Snakefile").read_text()
    assert "stages.yaml" in snakefile and not re.search(r"rules/(data|train|sample|denoise)\.smk", snakefile)


def test_every_command_belongs_to_one_stage():
    owners = [c for entry in STAGES.values() for c in entry["commands"]]
    assert len(owners) == len(set(owners))
    # `claims` is the end of the run (every stage's verdicts in one table) and `plan` what comes
    # before it (every stage's jobs and their cost): neither is a stage
    assert set(COMMANDS) == set(owners) | {"claims", "plan"}
    for name, help_ in COMMANDS.items():
        module = command_module(name)
        assert module.__name__ == f"missingu.cli.{name.replace('-', '_')}"
        assert callable(module.add_arguments) and callable(module.run) and help_
        assert not hasattr(module, "HELP")  # one place: the table


def test_stage_modules_import_no_other_stage_module():
    for task in TASKS:
        imported = _imports(PACKAGE / f"{task}.py")
        others = {t for t in TASKS if t != task}
        assert not imported & others, f"{task} imports {sorted(imported & others)}"


def test_the_library_imports_neither_snakemake_nor_the_layers_above_it():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        imported = _imports(path)
        assert not any(n.startswith("snakemake") for n in imported), rel
        if rel.parts[0] not in ("cli", "report"):
            assert not any(n == "cli" or n.startswith(("cli.", "report")) for n in imported), rel
    # the training loop does not import the experiment (checkpoint metadata lives with the experiment)
    assert "experiment" not in _imports(PACKAGE / "train.py")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_one_shape(task):
    import importlib

    module = importlib.import_module(f"missingu.{task}")
    spec = importlib.import_module(f"missingu.specs.{task}")
    assert callable(module.run) and module.work is spec.work
    # the config is defined in the task's spec module (read without torch) and re-exported by the task
    configs = [v for v in vars(spec).values() if dataclasses.is_dataclass(v) and v.__module__ == spec.__name__
               and v.__name__.endswith("Config")]
    assert configs, f"missingu.specs.{task} has no config dataclass"
    assert all(getattr(module, c.__name__) is c for c in configs)


def _workflow_imports() -> set[str]:
    """The package modules the Snakefile and the rule files import (what the parse needs)."""
    found = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]:
        found |= set(re.findall(r"^\s*(?:from|import) (missingu[\w.]*)", path.read_text(), re.M))
    return found


def test_the_workflow_parse_and_the_plan_import_no_torch():
    """Reading a config, the Snakefile's parse and the plan import the specs, never torch: a dry run
    and the Snakemake process every SLURM job starts skip torch's seconds of import."""
    modules = sorted(_workflow_imports() | {"missingu.experiment", "missingu.plan"}
                     | {f"missingu.specs.{p.stem}" for p in (PACKAGE / "specs").glob("*.py") if p.stem != "__init__"})
    assert {"missingu.experiment", "missingu.plan", "missingu.specs.stepaware"} <= set(modules)
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'torchdiffeq')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    # a negative control: the same check sees torch where it is imported
    out = subprocess.run([sys.executable, "-c", code.replace("for m in", "import missingu.models\nfor m in", 1)],
                         capture_output=True, text=True, check=True).stdout
    assert "torch" in out


def test_the_command_list_and_the_plan_command_start_without_torch():
    """`missingu --help` and `missingu plan` import only the command they run, and no torch."""
    check = ("import sys\nfrom missingu.cli import main\nsys.argv = ['missingu', *sys.argv[1:]]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('TORCH', sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:1])")
    for argv in (["--help"], ["plan", "--config", str(ROOT / "config/smoke.yaml"), "--totals"]):
        out = subprocess.run([sys.executable, "-c", check, *argv], capture_output=True, text=True, check=True).stdout
        assert "TORCH []" in out, (argv, out[-300:])
    assert "plan" in out and "total" in out  # the plan was printed, not an error
    out = subprocess.run([sys.executable, "-c", check, "info", "--help"], capture_output=True, text=True).stdout
    assert "TORCH ['torch']" in out  # negative control: a command that measures a model imports it


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 430}
    assert not long, long
