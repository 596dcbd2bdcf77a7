# missingu: dataset -> trained U-Net and cU-Net DDPMs -> samples -> tables, figures, notebooks.
#   snakemake --cores all                                   embedded default (digits, CPU)
#   snakemake --cores all --configfile config/paper.yaml    paper scale (GPU)
#   snakemake --report results/report.html                  figures and tables with captions

import os

import yaml
from snakemake.utils import min_version

min_version("8.20")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


# The stages, in order (workflow/stages.yaml says what files each one has): each includes its
# own rules; the analysis notebooks of those that have one become rules in notebooks.smk.
with open(os.path.join(workflow.basedir, "workflow", "stages.yaml")) as _fh:
    STAGES = yaml.safe_load(_fh)


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"


for _stage in STAGES:

    include: f"workflow/rules/{_stage}.smk"


include: "workflow/rules/notebooks.smk"
include: "workflow/rules/report.smk"


# What the run will cost (missingu.plan, the numbers the SLURM resources ask), once where Snakemake
# runs, dry runs included; `missingu plan --config FILE` lists every job.
if workflow.is_main_process:
    logger.info(plan_text())


onstart:
    check_every_job()


rule all:
    default_target: True
    input:
        final_outputs(),
        rules.report.output,
