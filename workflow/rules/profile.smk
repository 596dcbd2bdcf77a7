# Efficiency measurements on the device that runs this job. It waits for all sampling jobs so
# that nothing else competes for the machine while it times, and uses every core given.


rule profile:
    input:
        checkpoints=train_outputs("ema.pt"),
        samples=sample_outputs("json"),
    output:
        report("results/profile/efficiency.csv", caption="../report/profile_csv.rst", category="Efficiency"),
    params:
        config=profile_config,
        checkpoints=checkpoint_args,
    log:
        "logs/profile/efficiency.log",
    benchmark:
        "benchmarks/profile/efficiency.tsv"
    conda:
        ENV
    threads: all_cores
    resources:
        gpu=GPU,
        mem_mb=16000,
        runtime=240,
        slurm_partition=SLURM_PARTITION,
        slurm_account=SLURM_ACCOUNT,
    shell:
        "python -m missingu.cli profile --config-json {params.config} {params.checkpoints} --out {output}"
        " --threads {threads} --no-progress 2> {log}"
