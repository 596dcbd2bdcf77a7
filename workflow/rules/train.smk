# Training resumes from results/train/<dataset>/<model>/resume.pt (not a declared output, so
# Snakemake keeps it when it reruns an incomplete job; the profiles set rerun-incomplete). When
# Snakemake reruns training because its config changed, --restart-on-change moves the old
# resume.pt to superseded/ and trains from scratch. The log is appended to, so it keeps the story
# of interrupted attempts and restarts.


rule train:
    input:
        prepared("train"),
    output:
        model="results/train/{dataset}/{model}/ema.pt",
        loss=report(
            "results/train/{dataset}/{model}/loss.csv",
            caption="../report/loss_csv.rst",
            category="Training",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "loss log"},
        ),
        record="results/train/{dataset}/{model}/config.json",
    params:
        config=train_config,
        out_dir=subpath(output.model, parent=True),
    log:
        "logs/train/{dataset}/{model}.log",
    benchmark:
        "benchmarks/train/{dataset}/{model}.tsv"
    conda:
        ENV
    threads: train_processes
    resources:
        gpu=gpus("train", train_gpus),
        mem_mb=memory("train", 1500, per_data_mb=2),
        runtime=runtime("train", train_minutes),
    shell:
        "python -m missingu.cli train --config-json {params.config} --data {input} --out-dir {params.out_dir}"
        " --threads {threads} --restart-on-change 2>> {log}"
