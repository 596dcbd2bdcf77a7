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


# Speed of training steps and sampling under each fast path (`bench.variants`), on the device that
# runs this job; random weights, so it depends on the config alone. Rows are written as measured.
rule bench:
    output:
        report("results/profile/bench.csv", caption="../report/bench_csv.rst", category="Efficiency"),
    params:
        config=bench_config,
    log:
        "logs/profile/bench.log",
    benchmark:
        "benchmarks/profile/bench.tsv"
    conda:
        ENV
    threads: all_cores
    resources:
        gpu=gpus("bench", GPU),
        mem_mb=memory("bench", 3000),
        runtime=runtime("bench", bench_minutes),
    shell:
        "python -m missingu.cli bench --config-json {params.config} --out {output} --threads {threads} 2> {log}"
