"""The Snakemake pipeline end to end: one run of the smoke config, through README's SLURM command
where a local cluster can run and on this machine otherwise (its outputs, notebooks, report, what
an edit reruns, a changed config retraining from scratch)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from missingu import plan
from pipeline_run import (
    ROOT,
    STAGE_NOTEBOOKS,
    command_env,
    matrix,
    model_entry,
    planned_jobs,
    smoke,
    snakemake,
    write,
)
from slurm_cluster import unavailable


@dataclass
class SmokeRun:
    """The smoke DAG, run once for this file: ``workdir`` its outputs, ``output`` Snakemake's log,
    ``planned`` the jobs per rule its dry run listed, ``slurm`` whether it ran through SLURM."""

    workdir: Path
    output: str
    planned: dict[str, int]
    slurm: bool


def _readme_slurm_command() -> list[str]:
    """README's SLURM command for the smoke config, word for word."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    command = next(line for line in lines if line.startswith(
        "snakemake --workflow-profile workflow/profiles/slurm --configfile config/smoke.yaml"))
    return shlex.split(command)


@pytest.fixture(scope="module")
def smoke_dag(tmp_path_factory, request) -> SmokeRun:
    """Where a local SLURM cluster can run (root, slurm-wlm: CI), README's SLURM command as written
    (run from the checkout, its results in a temporary folder, squeue polled sooner); elsewhere
    the same DAG here, on two cores. Every test of this file reads this one run."""
    workdir = tmp_path_factory.mktemp("smoke")
    if unavailable() is None:
        request.getfixturevalue("cluster")
        command = _readme_slurm_command()
        assert command[0] == "snakemake"
        extra = ["-d", str(workdir), "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "3"]
        dry = subprocess.run([sys.executable, "-m", *command, *extra, "-n"], cwd=ROOT, capture_output=True,
                             text=True, env=command_env())
        assert dry.returncode == 0, dry.stderr[-3000:]
        proc = subprocess.run([sys.executable, "-m", *command, *extra], cwd=ROOT, capture_output=True, text=True,
                              env=command_env(), timeout=1200)
    else:
        dry = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"))
        proc = snakemake(workdir, "--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    return SmokeRun(workdir, out, planned_jobs(dry.stdout), slurm=unavailable() is None)


@pytest.fixture(scope="module")
def smoke_run(smoke_dag: SmokeRun) -> Path:
    return smoke_dag.workdir


def test_readme_slurm_command_runs_every_rule(smoke_dag):
    """README's SLURM command runs the whole smoke DAG: every rule that is not local goes through
    sbatch, `bench` and `profile` (every core locally) included, each asking the CPUs it then uses."""
    if not smoke_dag.slurm:
        pytest.skip(f"ran without SLURM: {unavailable()}")
    planned = {rule: n for rule, n in smoke_dag.planned.items() if rule in plan.STAGES}
    assert {"bench", "profile", "stepaware"} <= set(planned)
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", smoke_dag.output)
    per_rule = {rule: sum(1 for _, r in submitted if r == rule) for rule in {r for _, r in submitted}}
    assert per_rule == planned, smoke_dag.output[-3000:]
    assert "More processors requested than permitted" not in smoke_dag.output
    assert (smoke_dag.workdir / "results/report.html").is_file()


def test_end_to_end_outputs_exist(smoke_run):
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    expected = ["results/notebooks/train.ipynb", "results/notebooks/train.html",
                "results/notebooks/sample.ipynb", "results/notebooks/sample.html",
                "results/tables/training.csv", "results/tables/training.md",
                "results/tables/sampling.csv", "results/tables/sampling.md",
                "results/figures/loss_curves.png", "results/figures/samples_digits.png",
                "results/profile/efficiency.csv", "results/notebooks/efficiency.ipynb",
                "results/notebooks/efficiency.html", "results/tables/efficiency.csv", "results/tables/efficiency.md",
                "results/tables/efficiency_vs_claims.csv", "results/tables/efficiency_vs_claims.md",
                "results/figures/efficiency_vs_claims.png", "benchmarks/profile/efficiency.tsv",
                "results/profile/bench.csv", "results/tables/bench.csv", "results/tables/bench.md",
                "results/tables/claims.csv", "results/tables/claims.md",
                "results/report.html", "benchmarks/report/report.tsv"]
    for model in cfg["models"]:
        run = f"results/train/digits/{model['name']}"
        expected += [f"{run}/ema.pt", f"{run}/loss.csv", f"{run}/config.json",
                     f"logs/train/digits/{model['name']}.log", f"benchmarks/train/digits/{model['name']}.tsv"]
        for sampler in model.get("samplers") or [s["name"] for s in cfg["samplers"]]:
            stem = f"results/samples/digits/{model['name']}/{sampler}"
            expected += [f"{stem}.pt", f"{stem}.json", f"{stem}.png"]
    for rel in expected:
        path = smoke_run / rel
        assert path.is_file() and path.stat().st_size > 0, rel
    table = (smoke_run / "results/tables/sampling.csv").read_text().splitlines()
    assert len(table) == 1 + len(matrix(cfg)[1])


def test_each_step_aware_study_has_its_files_rows_and_claim_rows(smoke_run):
    """The smoke config's two studies (main, with the cU-Net mixed in; widths, without): each its
    own files and figures, its rows in the table, and its own claim rows; the study that mixes a
    model in stands in for the claims about the slimmable network alone."""
    for study in ("main", "widths"):
        for rel in (f"results/stepaware/digits/{study}.csv", f"results/stepaware/digits/{study}.json",
                    f"results/figures/stepaware_heatmap_digits_{study}.png",
                    f"results/figures/stepaware_pareto_digits_{study}.png"):
            assert (smoke_run / rel).is_file(), rel
    mixes = {study: json.loads((smoke_run / f"results/stepaware/digits/{study}.json").read_text())["settings"]["mix"]
             for study in ("main", "widths")}
    assert mixes == {"main": ["cunet"], "widths": []}
    table = pd.read_csv(smoke_run / "results/tables/stepaware.csv")
    assert set(table["study"]) == {"main", "widths"}
    assert not table[table["study"] == "widths"]["strategy"].str.contains("cunet").any()
    versus = pd.read_csv(smoke_run / "results/tables/stepaware_vs_claims.csv")
    saving = versus[versus["claim_id"] == "ddsm_cifar10"].set_index("study")["setting"]
    assert "mixes in cunet" in saving["main"] and "mixes in" not in saving["widths"]


@pytest.mark.parametrize("name", STAGE_NOTEBOOKS)
def test_executed_notebooks_have_no_error(smoke_run, name):
    nb = json.loads((smoke_run / f"results/notebooks/{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in code)
    # a notebook a user opens shows no warning the user did not cause (tqdm's "IProgress not found" was one)
    warnings = [o["text"] for c in code for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not warnings, warnings


def test_report_rule_collects_figures_and_tables(smoke_run):
    # the `report` rule runs `snakemake --report` inside the run; its HTML embeds every report() file
    html = (smoke_run / "results/report.html").read_text(errors="replace")
    assert "Report created." in (smoke_run / "logs/report/report.log").read_text()
    for name in ("loss_curves.png", "samples_digits.png", "training.csv", "sampling.csv", "efficiency.csv",
                 "efficiency_vs_claims.csv", "efficiency_vs_claims.png", "denoise.csv", "claims.csv"):
        assert name in html


def test_second_run_has_nothing_to_do(smoke_run):
    proc = snakemake(smoke_run, "-n", "--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"))
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _dry_run_jobs(workdir: Path, cfg: dict, tmp_path: Path) -> dict[str, int]:
    proc = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(write(tmp_path, cfg)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return planned_jobs(proc.stdout)


# Each rule sees only its own config entries (and the profile depends on the trained weights,
# not on the samples), so an edit plans exactly the jobs that depend on what changed.
def _edit_model(c):
    model_entry(c, "cunet")["options"] = {"solver_steps": 2}


def _edit_sampler(c):
    next(s for s in c["samplers"] if s["name"] == "ddim10")["eta"] = 0.5


def _edit_profile(c):
    c["profile"]["repeats"] = 4


def _edit_denoise(c):
    c["denoise"] = {**c.get("denoise", {}), "sigmas": [0.1]}


def _edit_evaluate(c):
    c["evaluate"] = {**c.get("evaluate", {}), "kid_subset_size": 50}


END = {"claims": 1, "report": 1, "all": 1}  # every stage's claims end in the one claims table
NOTEBOOKS = {f"{name}_notebook": 1 for name in STAGE_NOTEBOOKS} | {"notebook_html": len(STAGE_NOTEBOOKS)}
# the step-aware studies (smoke: model slim, sampler ddim10; main mixes cunet in, widths does not) and
# their notebook
STUDY = {"stepaware": 2, "stepaware_notebook": 1}
# the smoke matrix: unet with ddpm and ddim10, cunet with ddim10 and pf_ode, slim with ddim10
EVERYTHING = {"train": 3, "sample": 5, "denoise": 3, "train_classifier": 1, "evaluate": 5, "profile": 1, "bench": 1,
              "stepaware": 2, **NOTEBOOKS, **END}
RERUN_SCOPE = [
    ("model option", _edit_model,  # the cU-Net: also on offer in the main step-aware study, not in widths
     {"train": 1, "sample": 2, "denoise": 1, "evaluate": 2, "profile": 1, "bench": 1, "stepaware": 1, **NOTEBOOKS,
      **END}),
    ("model recipe", lambda c: model_entry(c, "unet").update(train={"lr": 5e-4}),  # that model's training alone
     {"train": 1, "sample": 2, "denoise": 1, "evaluate": 2, "profile": 1,
      **{name: n for name, n in NOTEBOOKS.items() if name != "stepaware_notebook"},
      "notebook_html": len(STAGE_NOTEBOOKS) - 1, **END}),
    ("sampler", _edit_sampler,  # ddim10: also the study's sampler
     {"sample": 3, "evaluate": 3, "sample_notebook": 1, "quality_notebook": 1, "notebook_html": 3, **STUDY, **END}),
    ("profile", _edit_profile,
     {"profile": 1, "efficiency_notebook": 1, "notebook_html": 1, **END}),
    ("bench", lambda c: c.update(bench={"rounds": 3}),
     {"bench": 1, "efficiency_notebook": 1, "notebook_html": 1, **END}),
    ("stepaware", lambda c: c["stepaware"].update(generations=3),  # the section's keys: every study's
     {**STUDY, "notebook_html": 1, **END}),
    ("one study", lambda c: c["stepaware"]["studies"]["widths"].update(generations=3),  # that study alone
     {"stepaware": 1, "stepaware_notebook": 1, "notebook_html": 1, **END}),
    ("denoise", _edit_denoise,
     {"denoise": 3, "denoise_notebook": 1, "notebook_html": 1, **END}),
    ("evaluate", _edit_evaluate,  # the classifier is the study's quality measure too
     {"train_classifier": 1, "evaluate": 5, "quality_notebook": 1, "notebook_html": 2, **STUDY, **END}),
    ("seed", lambda c: c.update(seed=1), EVERYTHING),
    ("device", lambda c: c.update(device="auto"), EVERYTHING),  # no GPU here: auto is the CPU, but the text changed
]


@pytest.mark.parametrize(("what", "edit", "expected"), RERUN_SCOPE, ids=[r[0] for r in RERUN_SCOPE])
def test_an_edit_reruns_only_what_depends_on_it(smoke_run, tmp_path, what, edit, expected):
    cfg = smoke()
    edit(cfg)
    assert _dry_run_jobs(smoke_run, cfg, tmp_path) == expected


def test_failed_notebook_leaves_its_executed_copy_in_logs(smoke_run):
    # a sampling summary the notebook cannot read makes it fail
    bad = smoke_run / "results/samples/digits/unet/ddpm.json"  # read by the sample notebook
    original = bad.read_text()
    try:
        bad.write_text("{}")
        os.utime(bad, None)
        proc = snakemake(smoke_run, "results/notebooks/sample.ipynb", "--cores", "1",
                         "--configfile", str(ROOT / "config/smoke.yaml"), "--forcerun", "sample_notebook")
        assert proc.returncode != 0
        executed = json.loads((smoke_run / "logs/notebooks/sample.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert errors and errors[0]["ename"] == "KeyError"
        assert not (smoke_run / "results/notebooks/sample.ipynb").exists()
    finally:
        bad.write_text(original)


def test_config_edit_retrains_from_scratch_and_keeps_the_old_state(smoke_run, tmp_path):
    # the story of a new user: after a run, change one line (train.lr) and run again
    workdir = tmp_path / "work"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    cfg = smoke()
    cfg["train"]["lr"] = 0.002
    # the trainings only (the jobs after them are the same as in the end-to-end run), to keep it short
    trained = [f"results/train/digits/{m}/ema.pt" for m in ("unet", "cunet")]
    proc = snakemake(workdir, *trained, "--cores", "2", "--configfile", str(write(tmp_path, cfg)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for model in ("unet", "cunet"):
        run = workdir / f"results/train/digits/{model}"
        record = json.loads((run / "config.json").read_text())
        assert record["config"]["train"]["lr"] == 0.002 and record["meta"]["train"]["lr"] == 0.002
        kept = list((run / "superseded").glob("resume-*.pt"))
        assert len(kept) == 1, "the state of the old configuration is kept, not deleted"
        log = (workdir / f"logs/train/digits/{model}.log").read_text()
        assert "was written by a different configuration (train:" in log and "training from step 0" in log
        steps = [int(r.split(",")[0]) for r in (run / "loss.csv").read_text().splitlines()[1:]]
        assert steps == list(range(5, cfg["train"]["steps"] + 1, 5))
    assert "Nothing to be done" in snakemake(workdir, *trained, "-n", "--cores", "2", "--configfile",
                                             str(tmp_path / "edited.yaml")).stdout
