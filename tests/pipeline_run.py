"""What the pipeline tests share: running the repository's Snakefile, reading a dry run, the
smoke config and its matrix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "config" / f"{name}.yaml" for name in ("config", "paper", "paper_lite", "gpu_smoke", "photos", "smoke")]
STAGES = yaml.safe_load((ROOT / "workflow/stages.yaml").read_text())
STAGE_NOTEBOOKS = [name for name, stage in STAGES.items() if stage["notebook"]]


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line that runs the repository's Snakefile in ``workdir``."""
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]


def command_env(path_first: Path | None = None) -> dict[str, str]:
    """This environment with this Python's scripts first on ``PATH`` (the jobs' ``python`` and
    ``snakemake``), after ``path_first`` if given (a folder searched for commands before the others)."""
    first = [str(path_first)] if path_first else []
    return {**os.environ, "PATH": os.pathsep.join([*first, str(Path(sys.executable).parent), os.environ["PATH"]])}


def snakemake(workdir: Path, *args: str, path_first: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with ``workdir`` as working directory (``path_first``: a
    folder searched for commands before the others)."""
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True,
                          env=command_env(path_first), **kwargs)


def planned_jobs(output: str) -> dict[str, int]:
    """Rule name -> job count from the job-stats table of a dry run (empty: nothing to do)."""
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return {}
    rows = [line.split() for line in lines[lines.index("Job stats:") + 3:]]
    table = {}
    for row in rows:
        if len(row) != 2 or row[0] == "total":
            break
        table[row[0]] = int(row[1])
    return table


def dry_run_jobs(output: str) -> list[dict]:
    """Every job a dry run lists: its ``rule``, ``wildcards`` and ``resources`` (name -> text)."""
    jobs: list[dict] = []
    for line in output.splitlines():
        text = line.strip()
        if line.startswith(("rule ", "localrule ")):
            jobs.append({"rule": line.split()[1].rstrip(":"), "wildcards": {}, "resources": {}})
        elif jobs and text.startswith("wildcards:"):
            jobs[-1]["wildcards"] = dict(item.split("=", 1) for item in text.split(":", 1)[1].strip().split(", "))
        elif jobs and text.startswith("resources:"):
            jobs[-1]["resources"] = dict(re.findall(r"(\w+)=([^,\s]+)", text))
    return jobs


def planned_wildcards(output: str, rule: str) -> list[dict[str, str]]:
    """The wildcards of every job of ``rule`` a dry run lists."""
    return [job["wildcards"] for job in dry_run_jobs(output) if job["rule"] == rule]


def matrix(cfg: dict) -> tuple[set, set]:
    """(dataset, model) trained and (dataset, model, sampler) sampled, from the config's lists."""
    every = {key: [e["name"] for e in cfg.get(key, [])] for key in ("datasets", "samplers")}
    runs = {(d, m["name"]) for m in cfg["models"] for d in m.get("datasets") or every["datasets"]}
    drawn = {(d, m["name"], s) for m in cfg["models"] for d in m.get("datasets") or every["datasets"]
             for s in m.get("samplers") or every["samplers"]}
    return runs, drawn


def smoke() -> dict:
    return yaml.safe_load((ROOT / "config/smoke.yaml").read_text())


def write(tmp_path: Path, cfg: dict, name: str = "edited.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def model_entry(cfg: dict, name: str) -> dict:
    return next(m for m in cfg["models"] if m["name"] == name)
