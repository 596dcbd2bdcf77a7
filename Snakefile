# missingu: dataset -> trained U-Net and cU-Net DDPMs -> samples -> tables, figures, notebooks.
#   snakemake --cores all                                   embedded default (digits, CPU)
#   snakemake --cores all --configfile config/paper.yaml    paper scale (GPU)
#   snakemake --report results/report.html                  figures and tables with captions

import os

from snakemake.utils import min_version

min_version("8.20")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/stepaware.smk"
include: "workflow/rules/notebooks.smk"
include: "workflow/rules/report.smk"


onstart:
    check_every_job()


rule all:
    default_target: True
    input:
        final_outputs(),
        "results/report.html",
