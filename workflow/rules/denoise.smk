# The denoising task: every trained model as a Gaussian denoiser of its dataset's test images.
# Metric weights (LPIPS's AlexNet, torch-fidelity's Inception) are fetched once into TORCH_HOME
# when online; offline and not staged, fetch_weights records what is missing and every metric that
# needs a file says "not computed: stage <file> in <dir>" while the rest of the DAG completes.
# After staging a file by hand, rerun with `--forcerun fetch_weights`.


rule fetch_weights:
    output:
        os.path.join(TORCH_HOME, "weights.json"),
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


rule denoise:
    input:
        model=rules.train.output.model,
        data=prepared("test"),
        weights=rules.fetch_weights.output[0],
    output:
        summary="results/denoise/{dataset}/{model}.csv",
        curves="results/denoise/{dataset}/{model}.curves.csv",
        images="results/denoise/{dataset}/{model}.images.csv",
        examples="results/denoise/{dataset}/{model}.examples.pt",
        record="results/denoise/{dataset}/{model}.json",
    params:
        config=denoise_config,
        torch_home=lambda wildcards, input: os.path.dirname(input.weights),
    log:
        "logs/denoise/{dataset}/{model}.log",
    benchmark:
        "benchmarks/denoise/{dataset}/{model}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=gpus("denoise", GPU),
        mem_mb=memory("denoise", 2000),
        runtime=runtime("denoise", denoise_minutes),
    shell:
        "TORCH_HOME={params.torch_home} python -m missingu.cli denoise --config-json {params.config}"
        " --checkpoint {input.model} --data {input.data} --out {output.summary} --torch-home {params.torch_home}"
        " --threads {threads} --no-progress 2> {log}"
