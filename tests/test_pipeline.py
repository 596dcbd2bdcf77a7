"""The Snakemake pipeline: lint, dry runs of every config, schema errors, one end-to-end run of
the smoke config, and resumption after the whole run is killed mid-training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "config" / name for name in ("config.yaml", "paper.yaml", "photos.yaml", "smoke.yaml")]
STAGES = yaml.safe_load((ROOT / "workflow/stages.yaml").read_text())
STAGE_NOTEBOOKS = [name for name, stage in STAGES.items() if stage["notebook"]]


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line that runs the repository's Snakefile in ``workdir``."""
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]


def snakemake(workdir: Path, *args: str, path_first: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with ``workdir`` as working directory (``path_first``: a
    folder searched for commands before the others)."""
    first = [str(path_first)] if path_first else []
    env = {**os.environ, "PATH": os.pathsep.join([*first, str(Path(sys.executable).parent), os.environ["PATH"]])}
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, env=env, **kwargs)


def _planned_jobs(output: str) -> dict[str, int]:
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
    # a --configfile updates the embedded default: what a config says about FID must hold
    if "fid" in cfg.get("evaluate", {}) and cfg["samplers"]:
        assert f'"fid": {str(cfg["evaluate"]["fid"]).lower()}' in proc.stdout, config.name


def _smoke() -> dict:
    return yaml.safe_load((ROOT / "config/smoke.yaml").read_text())


def _write(tmp_path: Path, cfg: dict, name: str = "edited.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _model(cfg: dict, name: str) -> dict:
    return next(m for m in cfg["models"] if m["name"] == name)


# (what is wrong, the edit, text the error must hold). The first four are caught by the schema,
# the rest only by the library's parser, which the Snakefile runs before planning any job.
MALFORMED = [
    ("zero steps", lambda c: c["train"].update(steps=0), "train"),
    ("unknown sampler kind", lambda c: c["samplers"].append({"name": "x", "kind": "euler_a"}), "euler_a"),
    ("unknown solver", lambda c: _model(c, "cunet").update(options={"solver": "rk45"}), "rk45"),
    ("unknown key", lambda c: c.update(bogus_key=1), "bogus_key"),
    ("lr written as text", lambda c: c["train"].update(lr="2e-3"), "2e-3"),
    ("image size the U-Net cannot halve", lambda c: c["datasets"][0].update(image_size=7),
     "datasets.digits.image_size: 7 cannot be halved"),
    ("groups that do not divide a width", lambda c: _model(c, "unet").update(options={"groups": 3}),
     "models[0].options.groups: 3 does not divide channel width"),
    ("cU-Net groups", lambda c: _model(c, "cunet").update(options={"groups": 5}),
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
    ("name that climbs out of results/", lambda c: _model(c, "unet").update(name=".."), "name"),
    ("linear schedule with too few steps", lambda c: c["diffusion"].update(timesteps=10), "beta >= 1"),
    ("attention list of the wrong length", lambda c: _model(c, "cunet").update(options={"attention": ["none"]}),
     "models[1].options.attention: needs one entry per level (2), got 1"),
]


# Two of them (one caught by the schema, one by the library) go through a real `snakemake -n`; the
# others through the same two checks the Snakefile runs at parse time (common.smk), in this process.
IN_A_DRY_RUN = {"zero steps", "image size the U-Net cannot halve"}


def _check_like_the_snakefile(cfg: dict) -> None:
    """What common.smk does with a config before planning any job: the schema, then the library."""
    from snakemake.utils import validate

    from missingu.experiment import parse_experiment

    validate(cfg, schema=str(ROOT / "workflow/schemas/config.schema.yaml"))
    parse_experiment(json.loads(json.dumps(cfg)))


@pytest.mark.parametrize(("what", "edit", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_fails_naming_the_key(tmp_path, what, edit, message):
    cfg = _smoke()
    edit(cfg)
    if what in IN_A_DRY_RUN:
        proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(_write(tmp_path, cfg, "bad.yaml")))
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
    cfg = _smoke()
    _model(cfg, "unet").update(options={"groups": 3})
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(_write(tmp_path, cfg, "bad.yaml")))
    assert proc.returncode != 0
    assert "models[0].options.groups: 3 does not divide" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir


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
        for sampler in cfg["samplers"]:
            stem = f"results/samples/digits/{model['name']}/{sampler['name']}"
            expected += [f"{stem}.pt", f"{stem}.json", f"{stem}.png"]
    for rel in expected:
        path = smoke_run / rel
        assert path.is_file() and path.stat().st_size > 0, rel
    table = (smoke_run / "results/tables/sampling.csv").read_text().splitlines()
    assert len(table) == 1 + len(cfg["models"]) * len(cfg["samplers"])


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
    proc = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(_write(tmp_path, cfg)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _planned_jobs(proc.stdout)


# Each rule sees only its own config entries (and the profile depends on the trained weights,
# not on the samples), so an edit plans exactly the jobs that depend on what changed.
def _edit_model(c):
    _model(c, "cunet")["options"] = {"solver_steps": 2}


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
# the step-aware study (smoke: model slim, mix cunet, sampler ddim10) and its notebook
STUDY = {"stepaware": 1, "stepaware_notebook": 1}
EVERYTHING = {"train": 3, "sample": 9, "denoise": 3, "train_classifier": 1, "evaluate": 9, "profile": 1, "bench": 1,
              "stepaware": 1, **NOTEBOOKS, **END}
RERUN_SCOPE = [
    ("model option", _edit_model,  # the cU-Net: also on offer in the step-aware study
     {"train": 1, "sample": 3, "denoise": 1, "evaluate": 3, "profile": 1, "bench": 1, "stepaware": 1, **NOTEBOOKS,
      **END}),
    ("sampler", _edit_sampler,  # ddim10: also the study's sampler
     {"sample": 3, "evaluate": 3, "sample_notebook": 1, "quality_notebook": 1, "notebook_html": 3, **STUDY, **END}),
    ("profile", _edit_profile,
     {"profile": 1, "efficiency_notebook": 1, "notebook_html": 1, **END}),
    ("bench", lambda c: c.update(bench={"rounds": 3}),
     {"bench": 1, "efficiency_notebook": 1, "notebook_html": 1, **END}),
    ("stepaware", lambda c: c["stepaware"].update(generations=3),
     {**STUDY, "notebook_html": 1, **END}),
    ("denoise", _edit_denoise,
     {"denoise": 3, "denoise_notebook": 1, "notebook_html": 1, **END}),
    ("evaluate", _edit_evaluate,  # the classifier is the study's quality measure too
     {"train_classifier": 1, "evaluate": 9, "quality_notebook": 1, "notebook_html": 2, **STUDY, **END}),
    ("seed", lambda c: c.update(seed=1), EVERYTHING),
    ("device", lambda c: c.update(device="auto"), EVERYTHING),  # no GPU here: auto is the CPU, but the text changed
]


@pytest.mark.parametrize(("what", "edit", "expected"), RERUN_SCOPE, ids=[r[0] for r in RERUN_SCOPE])
def test_an_edit_reruns_only_what_depends_on_it(smoke_run, tmp_path, what, edit, expected):
    cfg = _smoke()
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


def test_killed_run_resumes_from_checkpoint(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    cfg["models"] = cfg["models"][:1]
    cfg["samplers"] = cfg["samplers"][1:2]
    cfg["stepaware"] = {"model": ""}
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


def test_config_edit_retrains_from_scratch_and_keeps_the_old_state(smoke_run, tmp_path):
    # the story of a new user: after a run, change one line (train.lr) and run again
    workdir = tmp_path / "work"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    cfg = _smoke()
    cfg["train"]["lr"] = 0.002
    # the trainings only (the jobs after them are the same as in the end-to-end run), to keep it short
    trained = [f"results/train/digits/{m}/ema.pt" for m in ("unet", "cunet")]
    proc = snakemake(workdir, *trained, "--cores", "2", "--configfile", str(_write(tmp_path, cfg)))
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


def test_no_samplers_trains_and_the_sample_notebook_says_so(tmp_path):
    cfg = _smoke()
    cfg.update(samplers=[], models=cfg["models"][:1], denoise={"sigmas": [0.3], "protocols": ["matched"], "num_images": 4},
               stepaware={"model": ""})
    cfg["train"]["steps"] = 5
    cfg["profile"]["ablations"] = False
    # the sample notebook is the one that reads samples; the training notebook beside it
    proc = snakemake(tmp_path, "results/notebooks/train.html", "results/notebooks/sample.html", "--cores", "2",
                     "--configfile", str(_write(tmp_path, cfg)))
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
    jobs = sum(_planned_jobs(proc.stdout).values())
    # every job gets the command line's values (the local rules, `all` and `report`, ignore them)
    assert len(resources) == jobs and all("slurm_partition=gpu, slurm_account=mylab" in r for r in resources)
