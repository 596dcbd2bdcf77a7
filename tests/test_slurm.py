"""The smoke config through a real SLURM cluster on localhost (tests/slurm_cluster.py), with the
pipeline's workflow profile for snakemake-executor-plugin-slurm. Skips without root or without
Debian's slurm-wlm and munge (.ci/run installs them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import torch
import yaml

from slurm_cluster import local_cluster, unavailable
from test_pipeline import ROOT, snakemake, snakemake_command

needs_cluster = pytest.mark.skipif(unavailable() is not None, reason=f"no local SLURM cluster: {unavailable()}")

SMOKE = ROOT / "config/smoke.yaml"
NODE_MEMORY_MB = 6000
# no sacct without accounting; poll squeue early and often so the test stays short
SLURM = ("--workflow-profile", str(ROOT / "workflow/profiles/slurm"), "--slurm-status-command", "squeue",
         "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "10")


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(memory_mb=NODE_MEMORY_MB) as info:
        yield info


@needs_cluster
def test_smoke_run_through_slurm_equals_a_local_run(cluster, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    models, samplers = [m["name"] for m in cfg["models"]], [s["name"] for s in cfg["samplers"]]
    trained = [f"results/train/digits/{m}/ema.pt" for m in models]
    sampled = [f"results/samples/digits/{m}/{s}.pt" for m in models for s in samplers]

    local = snakemake(tmp_path / "local", *sampled, "--cores", "2", "--configfile", str(SMOKE))
    assert local.returncode == 0, local.stderr[-3000:]
    proc = snakemake(tmp_path / "slurm", *SLURM, "--configfile", str(SMOKE), timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]

    # every rule but the local ones (weights, notebooks, HTML, report) went through sbatch, each job with its id
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", out)
    per_rule = {rule: sum(1 for _, r in submitted if r == rule) for rule in {r for _, r in submitted}}
    assert per_rule == {"prepare_data": 2, "train": len(models), "sample": len(models) * len(samplers),
                        "denoise": len(models), "train_classifier": 1, "evaluate": len(models) * len(samplers),
                        "profile": 1}, out[-3000:]
    assert len({job for job, _ in submitted}) == len(submitted)
    assert (tmp_path / "slurm/results/report.html").is_file()

    # the same numbers as on this machine: weights and samples are bit-identical
    for rel in trained:
        a, b = (torch.load(tmp_path / where / rel, weights_only=True)["state_dict"] for where in ("local", "slurm"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    for rel in sampled:
        a, b = (torch.load(tmp_path / where / rel, weights_only=True)["images"] for where in ("local", "slurm"))
        assert torch.equal(a, b), rel


@needs_cluster
def test_a_job_no_node_can_run_is_an_error_before_submitting(cluster, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["datasets"] = [{"name": "celeba", "image_size": 64, "download": False}]  # 2 GB of images: 7 GB to prepare
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "work", *SLURM, "--configfile", str(path), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(rf"rule prepare_data needs 1 CPUs and \d+ MB, but no node of this SLURM cluster has that "
                     rf"\({cluster['cpus']} CPUs / {NODE_MEMORY_MB} MB\): it would stay pending", out), out[-3000:]
    assert not (tmp_path / "work/.snakemake/slurm_logs").exists()


@needs_cluster
def test_a_failing_job_is_reported_with_its_logs(cluster, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["datasets"] = [{"name": "mnist", "download": False, "root": str(tmp_path / "nowhere"), "max_images": 64}]
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "work", *SLURM, "--configfile", str(path), "--retries", "0", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"submitted with SLURM jobid \d+ \(log: \S*/slurm_logs/rule_prepare_data/", out), out[-3000:]
    assert "Error in rule prepare_data" in out and "logs/prepare_data/mnist/train.log" in out, out[-3000:]
    # the job's own log says what to stage where (show-failed-logs prints it too)
    log = (tmp_path / "work/logs/prepare_data/mnist/train.log").read_text()
    assert "dataset 'mnist' is not in" in log and "stage it by hand" in log


@needs_cluster
def test_a_training_the_cluster_stops_at_its_time_limit_resumes_in_the_next_attempt(cluster, tmp_path):
    """The cluster ends the running training job for its time limit (TIMEOUT, set to 0 with
    scontrol as an operator would); Snakemake's retry resumes it from its checkpoint."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["models"] = cfg["models"][:1]
    cfg["train"].update(steps=1500, checkpoint_every=5, log_every=25)  # about 40 s of training here
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    # the data prepared here, so the cluster runs the training alone (the plugin polls slowly)
    prepared = snakemake(work, "results/data/digits/train.pt", "--cores", "1", "--configfile", str(path))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    run = subprocess.Popen(snakemake_command(work, *SLURM, "results/train/digits/unet/ema.pt", "--retries", "1",
                                             "--configfile", str(path)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"})
    resume = work / "results/train/digits/unet/resume.pt"
    deadline = time.time() + 300
    while not resume.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert resume.exists() and len(running) == 1, f"no training job running ({running})"
    job = running[0]
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=0"], check=True)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-5000:]

    state = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "JobState=TIMEOUT" in state and "Reason=TimeLimit" in state, state
    log = (work / "logs/train/digits/unet.log").read_text()
    resumed = re.findall(r"resuming \S+ from step (\d+) of 1500", log)
    assert len(resumed) == 1 and int(resumed[0]) > 0, log[-3000:]
    steps = [int(r.split(",")[0]) for r in (work / "results/train/digits/unet/loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(25, 1501, 25))


def _fake_slurm(folder, *nodes: str):
    """`sinfo` printing `nodes` (lines of `%c|%m|%l|%G`) and an `sbatch` that records its calls."""
    folder.mkdir()
    (folder / "sinfo").write_text("#!/bin/sh\n" + "".join(f"echo '{n}'\n" for n in nodes))
    (folder / "sbatch").write_text(f"#!/bin/sh\necho called >> {folder}/sbatch.calls\nexit 1\n")
    for tool in ("sinfo", "sbatch"):
        (folder / tool).chmod(0o755)
    return folder


def _config(tmp_path, **changes):
    cfg = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize(("changes", "nodes", "message"), [
    # 20,000,000 steps of the smoke batch: days at the CPU throughput the estimate assumes
    ({"train__steps": 20_000_000}, ["2|6000|1-00:00:00|(null)", "2|6000|30:00|(null)"],
     r"rule train needs \d{4,} minutes, but no node of this SLURM cluster has that \(time limit 30 min, "
     r"time limit 1440 min\): it would stay pending. Lower it \(--set-resources train:runtime=MIN; with --retries N"),
    ({"device": "cuda"}, ["2|60000|infinite|(null)", "2|60000|infinite|gpu:1"],
     r"rule train needs 2 GPUs, .* \(0 GPUs, 1 GPUs\)"),
])
def test_sizes_are_checked_against_sinfo_before_any_job(tmp_path, changes, nodes, message):
    """Runtime and GPUs of every job are checked against the nodes `sinfo` lists before the first
    submission (a fake sinfo; nothing reaches sbatch)."""
    if changes.get("device") == "cuda":
        changes["train__gpus"] = 2
    fake = _fake_slurm(tmp_path / "bin", *nodes)
    proc = snakemake(tmp_path / "work", *SLURM, "--configfile", _config(tmp_path, **changes), path_first=fake,
                     timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(message, out), out[-3000:]
    assert not (fake / "sbatch.calls").exists()


def test_a_runtime_override_passes_the_check(tmp_path):
    fake = _fake_slurm(tmp_path / "bin", "2|6000|1-00:00:00|(null)")
    cfg = _config(tmp_path, train__steps=20_000_000)
    proc = snakemake(tmp_path / "work", *SLURM, "--configfile", cfg, "--set-resources", "train:runtime=1400",
                     "--retries", "0", path_first=fake, timeout=300)
    out = proc.stdout + proc.stderr
    assert "no node of this SLURM cluster" not in out, out[-3000:]
    assert (fake / "sbatch.calls").exists()  # got as far as submitting (the fake sbatch then refuses)
