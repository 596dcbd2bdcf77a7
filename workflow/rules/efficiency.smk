# The efficiency stage, on the device that runs its jobs. The profile asks for every core of the
# run, so no other local job runs beside it while it times; it depends on the trained weights
# alone, so re-sampling does not re-profile. A killed profile keeps its measured rows
# (efficiency.csv.partial.jsonl) and the rerun measures only the rest. The speed benchmark times
# training steps and sampling under each fast path (`bench.variants`) with random weights, so it
# depends on the config alone; its rows are written as measured.


rule profile:
    input:
        checkpoints=over(rules.train.output.model),
    output:
        report(f"{RESULTS['profile']}.csv", caption="../report/efficiency/profile_csv.rst", category="Efficiency"),
    params:
        # every dataset and model (the profile covers them all) and the profile settings
        config=config_slice(datasets=DATASETS, models=MODELS, sections=("diffusion", "profile")),
        # trained weights for every model at each dataset's shape
        checkpoints=lambda wildcards, input: flags(
            "checkpoint", over("{dataset}/{model}"), input.checkpoints
        ),
    log:
        "logs/profile/efficiency.log",
    benchmark:
        "benchmarks/profile/efficiency.tsv"
    conda:
        ENV
    threads: all_cores
    resources:
        gpu=gpus("profile", GPU),
        mem_mb=memory("profile"),
        runtime=runtime("profile"),
    shell:
        "python -m missingu.cli profile --config-json {params.config} {params.checkpoints} --out {output}"
        " --threads {threads} --no-progress 2> {log}"


rule bench:
    output:
        report(f"{RESULTS['bench']}.csv", caption="../report/efficiency/bench_csv.rst", category="Efficiency"),
    params:
        # its models (on the first dataset's shape) and the benchmark settings
        config=config_slice(datasets=DATASETS, models=MODELS, sections=("diffusion", "bench")),
    log:
        "logs/profile/bench.log",
    benchmark:
        "benchmarks/profile/bench.tsv"
    conda:
        ENV
    threads: all_cores
    resources:
        gpu=gpus("bench", GPU),
        mem_mb=memory("bench"),
        runtime=runtime("bench"),
    shell:
        "python -m missingu.cli bench --config-json {params.config} --out {output} --threads {threads} 2> {log}"


NOTEBOOKS["efficiency"] = {
    "input": {"profile": rules.profile.output[0], "bench": rules.bench.output[0], "claims_file": CLAIMS_FILE},
    "output": {
        "efficiency": report(
            f"{RESULTS['tables']}/efficiency.csv", caption="../report/efficiency/efficiency_table.rst",
            category="Efficiency",
        ),
        "efficiency_md": f"{RESULTS['tables']}/efficiency.md",
        "bench": report(
            f"{RESULTS['tables']}/bench.csv", caption="../report/efficiency/bench_table.rst", category="Efficiency"
        ),
        "bench_md": f"{RESULTS['tables']}/bench.md",
        "claims": report(
            f"{RESULTS['tables']}/efficiency_vs_claims.csv", caption="../report/efficiency/vs_claims.rst",
            category="Efficiency",
        ),
        "claims_md": f"{RESULTS['tables']}/efficiency_vs_claims.md",
        "figure": report(
            f"{RESULTS['figures']}/efficiency_vs_claims.png", caption="../report/efficiency/vs_claims.rst",
            category="Efficiency",
        ),
    },
    "parameters": {
        "profile_csv": rules.profile.output[0],
        "bench_csvs": [rules.bench.output[0]],
        "claims_yaml": CLAIMS_FILE,
    },
}
