rule prepare_data:
    output:
        "results/data/{dataset}/{split}.pt",
    params:
        config=data_config,
    log:
        "logs/prepare_data/{dataset}/{split}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}/{split}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=memory("prepare_data", 1000, per_data_mb=3, gpu_mb=0),
        runtime=runtime("prepare_data", 120),
    shell:
        "python -m missingu.cli prepare-data --config-json {params.config} --split {wildcards.split}"
        " --out {output} --threads {threads} 2> {log}"
