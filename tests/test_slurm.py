"""The smoke config through a real SLURM cluster on localhost (tests/slurm_cluster.py), with the
pipeline's workflow profile for snakemake-executor-plugin-slurm. Skips without root or without
Debian's slurm-wlm and munge (.ci/run installs them)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import torch
import yaml

from pipeline_run import ROOT, command_env, snakemake, snakemake_command

SMOKE = ROOT / "config/smoke.yaml"
# no sacct without accounting; poll squeue early and often so the test stays short
SLURM = ("--workflow-profile", str(ROOT / "workflow/profiles/slurm"), "--slurm-status-command", "squeue",
         "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "3")
SUBMITTED = r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/"


def test_a_training_the_cluster_stops_resumes_to_the_weights_of_an_unbroken_run(cluster, tmp_path):
    """Trained through sbatch, the weights equal those of the same command run here, unbroken, bit
    for bit, although the cluster ends the training job at its time limit (TIMEOUT, set to 0 with
    scontrol as an operator would) and Snakemake's retry resumes it from its checkpoint."""
    from missingu.cli import main

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["models"], cfg["samplers"] = [cfg["models"][0]], [cfg["samplers"][1]]  # unet, ddim10
    cfg["models"][0].pop("samplers", None)
    cfg["stepaware"] = {"model": ""}
    cfg["train"].update(steps=400, checkpoint_every=5, log_every=25)  # long enough to be stopped mid-way
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trained = "results/train/digits/unet/ema.pt"

    work = tmp_path / "slurm"
    output = tmp_path / "snakemake.out"  # read while it runs: the training's SLURM job id
    with open(output, "w") as out_fh:
        run = subprocess.Popen(snakemake_command(work, *SLURM, trained, "--retries", "1", "--configfile", str(path)),
                               stdout=out_fh, stderr=subprocess.STDOUT, text=True, env=command_env())
    resume = work / "results/train/digits/unet/resume.pt"
    deadline = time.time() + 300
    training: list[str] = []
    while not (resume.exists() and training) and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        training = [job for job, rule in re.findall(SUBMITTED, output.read_text()) if rule == "train"]
    # its job, by the id Snakemake printed (the session's cluster runs other tests' jobs too)
    running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True).stdout
    assert resume.exists() and training and training[0] in running.split(), f"no training job running:\n{running}"
    subprocess.run(["scontrol", "update", f"JobId={training[0]}", "TimeLimit=0"], check=True)
    # the reference, while the cluster works: the same commands the pipeline runs, here, unbroken
    local = tmp_path / "local"
    data = local / "train.pt"
    assert main(["prepare-data", "--config", str(path), "--split", "train", "--out", str(data)]) == 0
    # with the job's one thread: the float sums of another thread count differ in the last bits
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--config", str(path), "--model", "unet", "--data", str(data), "--out-dir",
                     str(local / "unet"), "--no-progress", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    run.wait(timeout=900)
    out = output.read_text()
    assert run.returncode == 0, out[-5000:]

    state = subprocess.run(["scontrol", "show", "job", training[0]], capture_output=True, text=True).stdout
    assert "JobState=TIMEOUT" in state and "Reason=TimeLimit" in state, state
    log = (work / "logs/train/digits/unet.log").read_text()
    resumed = re.findall(r"resuming \S+ from step (\d+) of 400", log)
    assert len(resumed) == 1 and int(resumed[0]) > 0, log[-3000:]

    # the training went through sbatch twice (the attempt the cluster stopped, and the retry)
    submitted = re.findall(SUBMITTED, out)
    per_rule = {rule: sum(1 for _, r in submitted if r == rule) for rule in {r for _, r in submitted}}
    assert per_rule == {"prepare_data": 1, "train": 2}, out[-3000:]
    assert len({job for job, _ in submitted}) == len(submitted)

    # the same numbers as on this machine, interrupted or not
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (local / "unet/ema.pt", work / trained))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_job_no_node_can_run_is_an_error_before_submitting(cluster, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["datasets"] = [{"name": "celeba", "image_size": 64, "download": False}]  # 2 GB of images: 7 GB to prepare
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "work", *SLURM, "--configfile", str(path), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(rf"rule \w+ needs 1 CPUs and \d+ MB, but no node of this SLURM cluster has that "
                     rf"\({cluster['cpus']} CPUs / {cluster['memory_mb']} MB\): it would stay pending", out), out[-3000:]
    assert not (tmp_path / "work/.snakemake/slurm_logs").exists()


def test_a_failing_job_is_reported_with_its_logs(cluster, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["datasets"] = [{"name": "mnist", "download": False, "root": str(tmp_path / "nowhere"), "max_images": 64}]
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "work", *SLURM, "results/data/mnist/train.pt", "--configfile", str(path),
                     "--retries", "0", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"submitted with SLURM jobid \d+ \(log: \S*/slurm_logs/rule_prepare_data/", out), out[-3000:]
    assert "Error in rule prepare_data" in out and "logs/prepare_data/mnist/train.log" in out, out[-3000:]
    # the job's own log says what to stage where (show-failed-logs prints it too)
    log = (tmp_path / "work/logs/prepare_data/mnist/train.log").read_text()
    assert "dataset 'mnist' is not in" in log and "stage it by hand" in log


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
