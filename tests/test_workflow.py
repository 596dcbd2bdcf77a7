"""The Snakemake workflow without the smoke run: lint, dry runs of every config (their matrix and
plan), config errors before any job, a run killed mid-training resuming, a run without samplers,
the SLURM profile's resources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from pipeline_run import (
    CONFIGS,
    ROOT,
    command_env,
    matrix,
    model_entry,
    planned_jobs,
    planned_wildcards,
    smoke,
    snakemake,
    write,
)


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_of_every_config(tmp_path, config):
    """Every config plans its matrix: each model on its own datasets with its own samplers, never
    the cross product (paper.yaml trains the ddsm network on CIFAR-10 alone)."""
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Using workflow specific profile" in proc.stdout + proc.stderr
    assert "Plan (missingu plan):" in proc.stdout + proc.stderr  # the cost, before anything runs
    cfg = yaml.safe_load(config.read_text())
    runs, drawn = matrix(cfg)
    planned = lambda rule, keys: {tuple(w[k] for k in keys) for w in planned_wildcards(proc.stdout, rule)}  # noqa: E731
    assert planned("train", ("dataset", "model")) == runs
    assert planned("denoise", ("dataset", "model")) == runs
    assert planned("sample", ("dataset", "model", "sampler")) == drawn
    assert planned("evaluate", ("dataset", "model", "sampler")) == drawn
    stats = planned_jobs(proc.stdout)
    assert stats["train"] == len(runs) and stats["sample"] == len(drawn)
    if config.name == "paper.yaml":  # the papers' matrix, not every model on every dataset
        assert len(runs) == 11 and len(drawn) == 11
        assert {d for d, m in runs if m == "ddsm"} == {"cifar10"}
        assert {m for d, m in runs if d == "cifar10"} == {"ddsm", "cunet_cifar10"}
        # DDSM's study over the widths alone, and ours with the CIFAR-10 cU-Net mixed in: a job each
        assert planned("stepaware", ("dataset", "study")) == {("cifar10", "ddsm"), ("cifar10", "ours_cunet_mix")}
    # a --configfile updates the embedded default: what a config says about FID must hold
    if "fid" in cfg.get("evaluate", {}) and cfg["samplers"]:
        assert f'"fid": {str(cfg["evaluate"]["fid"]).lower()}' in proc.stdout, config.name


# (what is wrong, the edit, text the error must hold). The first four are caught by the schema,
# the rest only by the library's parser, which the Snakefile runs before planning any job.
MALFORMED = [
    ("zero steps", lambda c: c["train"].update(steps=0), "train"),
    ("unknown sampler kind", lambda c: c["samplers"].append({"name": "x", "kind": "euler_a"}), "euler_a"),
    ("unknown solver", lambda c: model_entry(c, "cunet").update(options={"solver": "rk45"}), "rk45"),
    ("unknown key", lambda c: c.update(bogus_key=1), "bogus_key"),
    ("lr written as text", lambda c: c["train"].update(lr="2e-3"), "2e-3"),
    ("image size the U-Net cannot halve", lambda c: c["datasets"][0].update(image_size=7),
     "datasets.digits.image_size: 7 cannot be halved"),
    ("groups that do not divide a width", lambda c: model_entry(c, "unet").update(options={"groups": 3}),
     "models[0].options.groups: 3 does not divide channel width"),
    ("cU-Net groups", lambda c: model_entry(c, "cunet").update(options={"groups": 5}),
     "models[1].options.channels[0]: 16 must be divisible by groups (5)"),
    ("duplicate model names", lambda c: c["models"].append({"name": "unet", "arch": "cunet", "preset": "tiny"}),
     "models: names must be unique; 'unet' appears twice"),
    ("duplicate sampler names", lambda c: c["samplers"].append({"name": "ddpm", "kind": "ddim"}),
     "samplers: names must be unique; 'ddpm' appears twice"),
    ("unknown dataset", lambda c: c["datasets"].__setitem__(0, {"name": "imagenet"}),
     "datasets[0].name: unknown dataset 'imagenet'"),
    ("DDIM steps beyond T", lambda c: c["samplers"].append({"name": "ddim99", "kind": "ddim", "steps": 99}),
     "samplers[3].steps: DDIM sampler 'ddim99' asks for 99 steps; at most diffusion.timesteps (50)"),
    ("profile DDIM steps beyond T", lambda c: c["profile"].update(samplers=[{"name": "d", "kind": "ddim", "steps": 51}]),
     "profile.samplers[0].steps: DDIM sampler 'd' asks for 51 steps"),
    ("name that climbs out of results/", lambda c: model_entry(c, "unet").update(name=".."), "name"),
    ("linear schedule with too few steps", lambda c: c["diffusion"].update(timesteps=10), "beta >= 1"),
    ("unknown dataset in a model's list", lambda c: model_entry(c, "cunet").update(datasets=["digits", "mnist"]),
     "models.cunet.datasets: no dataset entry named 'mnist'; allowed: digits"),
    ("unknown recipe key", lambda c: model_entry(c, "slim").update(train={"warmup": 10}), "warmup"),
    ("recipe value of the wrong type", lambda c: model_entry(c, "slim").update(train={"lr": "fast"}),
     "models.slim.train.lr: expected a number, got 'fast'"),
    ("step-aware mix not trained where the study runs",
     lambda c: (c["datasets"].append({"name": "photos", "image_size": 8}), model_entry(c, "slim").update(
         datasets=["digits", "photos"]), model_entry(c, "cunet").update(datasets=["digits"])),
     "stepaware.mix: 'cunet' is not trained on 'photos'"),
    ("attention list of the wrong length", lambda c: model_entry(c, "cunet").update(options={"attention": ["none"]}),
     "models[1].options.attention: needs one entry per level (2), got 1"),
]


# Two of them (one caught by the schema, one by the library) go through a real `snakemake -n`; the
# others through the same two checks the Snakefile runs at parse time (common.smk), in this process.
IN_A_DRY_RUN = {"zero steps", "image size the U-Net cannot halve", "unknown dataset in a model's list"}


def _check_like_the_snakefile(cfg: dict) -> None:
    """What common.smk does with a config before planning any job: the schema, then the library."""
    from snakemake.utils import validate

    from missingu.experiment import parse_experiment

    validate(cfg, schema=str(ROOT / "workflow/schemas/config.schema.yaml"))
    parse_experiment(json.loads(json.dumps(cfg)))


@pytest.mark.parametrize(("what", "edit", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_fails_naming_the_key(tmp_path, what, edit, message):
    cfg = smoke()
    edit(cfg)
    if what in IN_A_DRY_RUN:
        proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(write(tmp_path, cfg, "bad.yaml")))
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "Error validating config" in out and message in out, out
        assert "Job stats" not in out
        return
    from snakemake.exceptions import WorkflowError

    from missingu.config import ConfigError

    with pytest.raises((WorkflowError, ConfigError)) as err:
        _check_like_the_snakefile(cfg)
    assert message in str(err.value)


def test_invalid_config_fails_before_any_job(tmp_path):
    cfg = smoke()
    model_entry(cfg, "unet").update(options={"groups": 3})
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(write(tmp_path, cfg, "bad.yaml")))
    assert proc.returncode != 0
    assert "models[0].options.groups: 3 does not divide" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_killed_run_resumes_from_checkpoint(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    cfg["models"] = cfg["models"][:1]
    cfg["samplers"] = cfg["samplers"][1:2]
    cfg["models"][0].pop("samplers")
    cfg["stepaware"] = {"model": ""}
    cfg["train"].update(steps=400, checkpoint_every=5, log_every=5)
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = command_env()
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


def test_no_samplers_trains_and_the_sample_notebook_says_so(tmp_path):
    cfg = smoke()
    cfg["models"][0].pop("samplers")
    cfg.update(samplers=[], models=cfg["models"][:1], denoise={"sigmas": [0.3], "protocols": ["matched"], "num_images": 4},
               stepaware={"model": ""})
    cfg["train"]["steps"] = 5
    cfg["profile"]["ablations"] = False
    # the sample notebook is the one that reads samples; the training notebook beside it
    proc = snakemake(tmp_path, "results/notebooks/train.html", "results/notebooks/sample.html", "--cores", "2",
                     "--configfile", str(write(tmp_path, cfg)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rel in ("results/tables/training.csv", "results/notebooks/train.html", "results/notebooks/sample.html"):
        assert (tmp_path / rel).is_file(), rel
    assert not (tmp_path / "results/samples").exists()
    assert "No samplers are configured" in (tmp_path / "results/notebooks/sample.ipynb").read_text()


def test_slurm_partition_and_account_come_from_the_workflow_profile(tmp_path):
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert {"slurm_partition", "slurm_account"} <= set(profile["default-resources"])
    assert not any(key in p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk")
                   for key in ("slurm_partition", "slurm_account"))
    proc = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "workflow/profiles/slurm"),
                     "--configfile", str(ROOT / "config/smoke.yaml"),
                     "--default-resources", "slurm_partition=gpu", "slurm_account=mylab")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resources = [line for line in proc.stdout.splitlines() if line.strip().startswith("resources:")]
    jobs = sum(planned_jobs(proc.stdout).values())
    # every job gets the command line's values (the local rules, `all` and `report`, ignore them)
    assert len(resources) == jobs and all("slurm_partition=gpu, slurm_account=mylab" in r for r in resources)
