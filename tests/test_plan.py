"""The cost plan (`missingu plan`): the jobs it lists are the jobs Snakemake plans, with the
runtime and memory the SLURM resources ask, and its totals add up; measured rates replace the
stated throughput only for the device they were measured on."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from missingu import plan
from missingu.cli import main
from missingu.experiment import load_experiment
from pipeline_run import ROOT, dry_run_jobs, planned_wildcards, snakemake

SMOKE = ROOT / "config" / "smoke.yaml"


def _dry_run_resources(output: str) -> dict[tuple[str, tuple], dict[str, int]]:
    """(rule, wildcards) -> its runtime and mem_mb, for every compute job of a dry run."""
    return {(job["rule"], tuple(sorted(job["wildcards"].items()))):
            {"runtime": int(job["resources"]["runtime"]), "mem_mb": int(job["resources"]["mem_mb"])}
            for job in dry_run_jobs(output) if job["rule"] in plan.STAGES}


def test_plan_lists_the_jobs_snakemake_plans_with_their_resources(tmp_path):
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(SMOKE))
    assert proc.returncode == 0, proc.stderr
    planned = _dry_run_resources(proc.stdout)
    jobs = plan.jobs(load_experiment(SMOKE), gpu=False)
    listed = {(job.rule, tuple(sorted(job.wildcards.items()))): job for job in jobs}
    assert set(listed) == set(planned)
    for key, job in listed.items():
        assert (job.runtime_minutes, job.mem_mb) == (planned[key]["runtime"], planned[key]["mem_mb"]), key
    assert planned_wildcards(proc.stdout, "train")  # the parser saw the jobs


def test_plan_totals_add_up_over_the_job_list():
    cfg = load_experiment(SMOKE)
    jobs = plan.jobs(cfg, gpu=False)
    report = plan.summary(jobs)
    assert sum(int(row["jobs"]) for row in report["stages"].values()) == len(jobs)
    assert report["total_hours"] == pytest.approx(sum(job.seconds for job in jobs) / 3600)
    assert sum(row["hours"] for row in report["stages"].values()) == pytest.approx(report["total_hours"])
    assert report["stages"]["train"]["jobs"] == len(cfg.runs())
    assert report["stages"]["sample"]["jobs"] == len(cfg.sampled())
    assert report["largest"].mem_mb == max(job.mem_mb for job in jobs)
    # more devices never make the run longer, nor shorter than its longest job
    longest = max(job.seconds for job in jobs) / 3600
    walls = [plan.summary(jobs, devices=n)["wall_hours"] for n in (1, 2, 8)]
    assert walls[0] >= walls[1] >= walls[2] >= longest - 1e-12


def test_paper_plan_follows_each_models_recipe():
    """Each training costs its own recipe (DDSM: 450k steps of 256 images, each through the
    sandwich's widths 1, 0.25 and a middle one: 1 + 1/16 + (0.75**2 + 0.5**2) / 2 of a full pass),
    and only DDSM trains on CIFAR-10."""
    cfg = load_experiment(ROOT / "config" / "paper.yaml")
    trainings = {job.name: job for job in plan.jobs(cfg, gpu=True) if job.rule == "train"}
    assert set(trainings) == {f"{d}/{m}" for d, m in cfg.runs()}
    ddsm = trainings["cifar10/ddsm"]
    start = plan.STARTUP_SECONDS
    assert ddsm.seconds == pytest.approx(start + 450_000 * 256 * (1 + 1 / 16 + 0.40625) * 32 * 32 * 3
                                                / plan.THROUGHPUT["gpu"])
    assert trainings["mnist/unet"].seconds == pytest.approx(start + 500_000 * 128 * 32 * 32 / plan.THROUGHPUT["gpu"])


def _bench_csv(path: Path, device: str, images_per_s: float) -> Path:
    fields = ["device_name", "arch", "preset", "part", "shape", "status", "variant", "batch", "images_per_s",
              "train_peak_mib", "s_per_image", "network_calls"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerow({"device_name": device, "arch": "unet", "preset": "paper", "part": "train",
                         "shape": "3x64x64", "status": "ok", "variant": "autocast", "batch": 128,
                         "images_per_s": images_per_s, "train_peak_mib": 12000})
        writer.writerow({"device_name": device, "arch": "unet", "preset": "paper", "part": "train",
                         "shape": "3x64x64", "status": "failed: compile", "variant": "compile", "batch": 128,
                         "images_per_s": 1e9})
    return path


def test_measured_rates_replace_the_stated_throughput_and_say_so(tmp_path, capsys):
    path = _bench_csv(tmp_path / "bench.csv", "GPU X", 1000.0)
    cfg = load_experiment(ROOT / "config" / "paper.yaml")
    rates = plan.read_rates([path])
    assert rates.device == "GPU X" and rates.train[("unet", "paper", "3x64x64")] == (1000.0, 12000.0)
    jobs = {job.name: job for job in plan.jobs(cfg, gpu=True, rates=rates) if job.rule == "train"}
    # measured (the failed row ignored)
    assert jobs["celeba/unet"].seconds == pytest.approx(plan.STARTUP_SECONDS + 500_000 * 128 / 1000.0)
    assert jobs["celeba/unet"].source == "measured (GPU X)"
    assert jobs["celeba/cunet"].source == "stated"  # no row for it
    assert plan.read_rates([path], device="GPU Y") is None  # another device's rows are not used
    assert main(["plan", "--config", str(ROOT / "config/paper.yaml"), "--bench", str(path), "--totals"]) == 0
    out = capsys.readouterr().out
    assert "measured on GPU X" in out and "stated throughput" in out
    assert "largest job:" in out and "a training step measured 12,000 MiB" in out


def test_plan_command_writes_every_job(tmp_path, capsys):
    out = tmp_path / "plan.csv"
    assert main(["plan", "--config", str(SMOKE), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == len(plan.jobs(load_experiment(SMOKE), gpu=False))
    text = capsys.readouterr().out
    assert "CPU-hours" in text and "train             digits/slim" in text


def test_readme_quotes_the_paper_plan():
    """README's table of what paper.yaml costs on the H100 is what `missingu plan` says with the
    committed H100 benchmarks: its job count, GPU-hours and wall time on 8 GPUs."""
    measured = ROOT / "results/measured/h100"
    rates = plan.read_rates([measured / "bench_train.csv", measured / "bench_inference.csv"])
    jobs = plan.jobs(load_experiment(ROOT / "config/paper.yaml"), gpu=True, rates=rates)
    one, eight = plan.summary(jobs), plan.summary(jobs, devices=8)
    readme = (ROOT / "README.md").read_text()
    assert f"| `paper.yaml` on one H100 | {len(jobs)} | {one['total_hours']:.1f} GPU-hours" in readme
    assert f"about {one['wall_hours']:.0f} h |" in readme
    assert f"| `paper.yaml` on 8 H100s | {len(jobs)} | the same | about {eight['wall_hours']:.0f} h" in readme
