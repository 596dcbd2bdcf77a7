# Efficiency measurements on the device that runs this job. It asks for every core of the run,
# so no other local job runs beside it while it times; it depends on the trained weights alone, so
# re-sampling does not re-profile. A killed profile keeps its measured rows
# (efficiency.csv.partial.jsonl) and the rerun measures only the rest.


rule profile:
    input:
        checkpoints=train_outputs("model"),
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
        gpu=gpus("profile", GPU),
        mem_mb=memory("profile", 3000),
        runtime=runtime("profile", profile_minutes),
    shell:
        "python -m missingu.cli profile --config-json {params.config} {params.checkpoints} --out {output}"
        " --threads {threads} --no-progress 2> {log}"
