# The training stage. Training resumes from results/train/<dataset>/<model>/resume.pt (not a
# declared output, so Snakemake keeps it when it reruns an incomplete job; the profiles set
# rerun-incomplete). When Snakemake reruns training because its config changed,
# --restart-on-change moves the old resume.pt to superseded/ and trains from scratch. The log is
# appended to, so it keeps the story of interrupted attempts and restarts.


rule train:
    input:
        prepared("train"),
    output:
        model=f"{RESULTS['train']}/ema.pt",
        loss=report(
            f"{RESULTS['train']}/loss.csv",
            caption="../report/train/loss_csv.rst",
            category="Training",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "loss log"},
        ),
        record=f"{RESULTS['train']}/config.json",
    params:
        config=config_slice(models=["{model}"], sections=("diffusion", "train", "speed")),
        out_dir=subpath(output.model, parent=True),
    log:
        "logs/train/{dataset}/{model}.log",
    benchmark:
        "benchmarks/train/{dataset}/{model}.tsv"
    conda:
        ENV
    threads: train_processes
    # the longest training first (its planned time): the critical path of a run on a few cores
    priority: longest_first("train")
    resources:
        gpu=gpus("train", train_gpus),
        mem_mb=memory("train"),
        runtime=runtime("train"),
    shell:
        "python -m missingu.cli train --config-json {params.config} --data {input} --out-dir {params.out_dir}"
        " --threads {threads} --restart-on-change 2>> {log}"


NOTEBOOKS["train"] = {
    "input": {
        "records": over(rules.train.output.record),
        "losses": over(rules.train.output.loss),
    },
    "output": {
        "training": report(
            f"{RESULTS['tables']}/training.csv", caption="../report/train/training_table.rst", category="Tables"
        ),
        "training_md": f"{RESULTS['tables']}/training.md",
        "loss_curves": report(
            f"{RESULTS['figures']}/loss_curves.png", caption="../report/train/loss_curves.rst", category="Figures"
        ),
    },
    "parameters": {
        "runs": records(("dataset", "model"), loss_csv=rules.train.output.loss, record=rules.train.output.record),
    },
}
