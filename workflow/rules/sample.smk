rule sample:
    input:
        rules.train.output.model,
    output:
        images="results/samples/{dataset}/{model}/{sampler}.pt",
        summary="results/samples/{dataset}/{model}/{sampler}.json",
        grid="results/samples/{dataset}/{model}/{sampler}.png",
    params:
        config=sample_config,
    log:
        "logs/sample/{dataset}/{model}/{sampler}.log",
    benchmark:
        "benchmarks/sample/{dataset}/{model}/{sampler}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=gpus("sample", GPU),
        mem_mb=memory("sample", 1500),
        runtime=runtime("sample", sample_minutes),
    shell:
        "python -m missingu.cli sample --config-json {params.config} --checkpoint {input} --out {output.images}"
        " --grid {output.grid} --threads {threads} 2> {log}"
