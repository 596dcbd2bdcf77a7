"""The Snakemake pipeline: lint, dry runs of every config, schema errors, one end-to-end run of
the smoke config, and resumption after the whole run is killed mid-training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "config" / name for name in ("config.yaml", "paper.yaml", "smoke.yaml")]


def snakemake(workdir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with ``workdir`` as working directory."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)


def _planned_jobs(output: str) -> dict[str, int]:
    """Rule name -> job count from the job-stats table of a dry run."""
    rows = [line.split() for line in output.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit() and row[0] != "total"}


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_of_every_config(tmp_path, config):
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Using workflow specific profile" in proc.stdout + proc.stderr
    cfg = yaml.safe_load(config.read_text())
    n_train = len(cfg["datasets"]) * len(cfg["models"])
    stats = _planned_jobs(proc.stdout)
    assert stats["train"] == n_train
    assert stats["sample"] == n_train * len(cfg["samplers"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"steps": 0}}, "train"),
        ({"samplers": [{"name": "x", "kind": "euler_a"}]}, "euler_a"),
        ({"models": [{"name": "m", "arch": "cunet", "options": {"solver": "rk45"}}]}, "rk45"),
        ({"bogus_key": 1}, "bogus_key"),
    ],
)
def test_invalid_config_fails_before_any_job(tmp_path, change, message):
    cfg = {**yaml.safe_load((ROOT / "config/smoke.yaml").read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(path))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out and message in out, out
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir


def test_end_to_end_outputs_exist(smoke_run):
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    expected = ["results/notebooks/results.ipynb", "results/notebooks/results.html",
                "results/tables/training.csv", "results/tables/training.md",
                "results/tables/sampling.csv", "results/tables/sampling.md",
                "results/figures/loss_curves.png", "results/figures/samples_digits.png",
                "results/profile/efficiency.csv", "results/notebooks/efficiency.ipynb",
                "results/notebooks/efficiency.html", "results/tables/efficiency.csv", "results/tables/efficiency.md",
                "results/tables/efficiency_vs_claims.csv", "results/tables/efficiency_vs_claims.md",
                "results/figures/efficiency_vs_claims.png", "benchmarks/profile/efficiency.tsv",
                "results/report.html", "benchmarks/report/report.tsv"]
    for model in cfg["models"]:
        run = f"results/train/digits/{model['name']}"
        expected += [f"{run}/ema.pt", f"{run}/loss.csv", f"{run}/config.json",
                     f"logs/train/digits/{model['name']}.log", f"benchmarks/train/digits/{model['name']}.tsv"]
        for sampler in cfg["samplers"]:
            stem = f"results/samples/digits/{model['name']}/{sampler['name']}"
            expected += [f"{stem}.pt", f"{stem}.json", f"{stem}.png"]
    for rel in expected:
        path = smoke_run / rel
        assert path.is_file() and path.stat().st_size > 0, rel
    table = (smoke_run / "results/tables/sampling.csv").read_text().splitlines()
    assert len(table) == 1 + len(cfg["models"]) * len(cfg["samplers"])


@pytest.mark.parametrize("name", ["results", "efficiency"])
def test_executed_notebooks_have_no_error(smoke_run, name):
    nb = json.loads((smoke_run / f"results/notebooks/{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in code)


def test_report_rule_collects_figures_and_tables(smoke_run):
    # the `report` rule runs `snakemake --report` inside the run; its HTML embeds every report() file
    html = (smoke_run / "results/report.html").read_text(errors="replace")
    assert "Report created." in (smoke_run / "logs/report/report.log").read_text()
    for name in ("loss_curves.png", "samples_digits.png", "training.csv", "sampling.csv", "efficiency.csv",
                 "efficiency_vs_claims.csv", "efficiency_vs_claims.png"):
        assert name in html


def test_second_run_has_nothing_to_do(smoke_run):
    proc = snakemake(smoke_run, "-n", "--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"))
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_a_sampler_resamples_without_retraining(smoke_run, tmp_path):
    # each rule sees only its own config entries, so a sampler edit touches that sampler's jobs
    # and what reads their outputs, never the trainings
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    next(s for s in cfg["samplers"] if s["name"] == "ddim10")["eta"] = 0.5
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(smoke_run, "-n", "--cores", "2", "--configfile", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _planned_jobs(proc.stdout)
    assert jobs.get("sample") == len(cfg["models"]), jobs
    assert "train" not in jobs and "prepare_data" not in jobs, jobs


def test_failed_notebook_leaves_its_executed_copy_in_logs(smoke_run):
    # a sampling summary the notebook cannot read makes it fail
    bad = smoke_run / "results/samples/digits/unet/ddpm.json"
    original = bad.read_text()
    try:
        bad.write_text("{}")
        os.utime(bad, None)
        proc = snakemake(smoke_run, "results/notebooks/results.ipynb", "--cores", "1",
                         "--configfile", str(ROOT / "config/smoke.yaml"), "--forcerun", "results_notebook")
        assert proc.returncode != 0
        executed = json.loads((smoke_run / "logs/notebooks/results.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert errors and errors[0]["ename"] == "KeyError"
        assert not (smoke_run / "results/notebooks/results.ipynb").exists()
    finally:
        bad.write_text(original)


def test_killed_run_resumes_from_checkpoint(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    cfg["models"] = cfg["models"][:1]
    cfg["samplers"] = cfg["samplers"][1:2]
    cfg["train"].update(steps=400, checkpoint_every=5, log_every=5)
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
           "results/train/digits/unet/ema.pt", "--cores", "1", "--configfile", str(path)]
    resume = tmp_path / "results/train/digits/unet/resume.pt"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not resume.exists() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # a few more checkpoints
    # what Ctrl-C, `kill` or a scheduler's time limit sends to the whole run; the training
    # process dies without cleaning up (SIGKILL of Snakemake itself would also leave its lock:
    # see README, `snakemake --unlock`)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert resume.exists(), "training never wrote a checkpoint"
    assert not (tmp_path / "results/train/digits/unet/ema.pt").exists(), "training finished before the kill"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "logs/train/digits/unet.log").read_text()
    assert "resuming" in log and "from step 0 " not in log
    steps = [int(r.split(",")[0]) for r in
             (tmp_path / "results/train/digits/unet/loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(5, 401, 5))
