# The data stage: each dataset split prepared into one file, and the metric weights (LPIPS's
# AlexNet, torch-fidelity's Inception) fetched once into TORCH_HOME when online. Offline and not
# staged, fetch_weights records what is missing and every metric that needs a file says "not
# computed: stage <file> in <dir>" while the rest of the DAG completes. After staging a file by
# hand, rerun with `--forcerun fetch_weights`.


rule prepare_data:
    output:
        f"{RESULTS['data']}.pt",
    params:
        config=config_slice(shared=()),  # a dataset's entry only: seed and device do not change the images
    log:
        "logs/prepare_data/{dataset}/{split}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}/{split}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=memory("prepare_data"),
        runtime=runtime("prepare_data"),
    shell:
        "python -m missingu.cli prepare-data --config-json {params.config} --split {wildcards.split}"
        " --out {output} --threads {threads} 2> {log}"


rule fetch_weights:
    output:
        os.path.join(RESULTS["weights"], "weights.json"),
    params:
        torch_home=subpath(output[0], parent=True),
    log:
        "logs/fetch_weights.log",
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "python -m missingu.cli fetch-weights --torch-home {params.torch_home} --status {output} --allow-missing"
        " --no-progress 2> {log}"
