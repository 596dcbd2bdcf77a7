# Sample quality: a small classifier per dataset (for the classifier Frechet distance, which needs
# no download) and, for every model and sampler, FID/KID (Inception weights from fetch_weights;
# offline and not staged, "not computed: stage ...") and the classifier distance of its samples.


rule train_classifier:
    input:
        train=prepared("train"),
        test=prepared("test"),
    output:
        model="results/classifier/{dataset}/classifier.pt",
        record="results/classifier/{dataset}/classifier.json",
    params:
        config=classifier_config,
    log:
        "logs/train_classifier/{dataset}.log",
    benchmark:
        "benchmarks/train_classifier/{dataset}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=gpus("train_classifier", GPU),
        mem_mb=memory("train_classifier", 1500, per_data_mb=3),
        runtime=runtime("train_classifier", classifier_minutes),
    shell:
        "python -m missingu.cli train-classifier --config-json {params.config} --data {input.train}"
        " --test {input.test} --out {output.model} --threads {threads} --no-progress 2> {log}"


rule evaluate:
    input:
        samples=rules.sample.output.images,
        summary=rules.sample.output.summary,
        classifier=rules.train_classifier.output.model,
        train=prepared("train"),
        test=prepared("test"),
        weights=rules.fetch_weights.output[0],
    output:
        "results/quality/{dataset}/{model}/{sampler}.json",
    params:
        config=classifier_config,
        torch_home=lambda wildcards, input: os.path.dirname(input.weights),
    log:
        "logs/evaluate/{dataset}/{model}/{sampler}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{model}/{sampler}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=gpus("evaluate", GPU),
        mem_mb=memory("evaluate", 3000, per_data_mb=3),
        runtime=runtime("evaluate", 60),
    shell:
        "TORCH_HOME={params.torch_home} python -m missingu.cli evaluate --config-json {params.config}"
        " --samples {input.samples} --classifier {input.classifier} --data {input.train} --test {input.test}"
        " --out {output} --torch-home {params.torch_home} --threads {threads} 2> {log}"
