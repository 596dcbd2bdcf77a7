# The quality stage: a small classifier per dataset (for the classifier Frechet distance, which
# needs no download) and, for every model and sampler, FID/KID (Inception weights from
# fetch_weights; offline and not staged, "not computed: stage ...") and the classifier distance of
# its samples.

from missingu.specs.classifier import SIDECARS as CLASSIFIER_SIDECARS
from missingu.specs.evaluate import SIDECARS as EVALUATE_SIDECARS


# The classifier and the evaluation depend on a dataset's entry, the evaluate settings, seed and device.
QUALITY_CONFIG = config_slice(sections=("evaluate",))


rule train_classifier:
    input:
        train=prepared("train"),
        test=prepared("test"),
    output:
        model=f"{RESULTS['classifier']}.pt",
        **beside(f"{RESULTS['classifier']}.pt", CLASSIFIER_SIDECARS),
    params:
        config=QUALITY_CONFIG,
    log:
        "logs/train_classifier/{dataset}.log",
    benchmark:
        "benchmarks/train_classifier/{dataset}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=gpus("train_classifier", GPU),
        mem_mb=memory("train_classifier"),
        runtime=runtime("train_classifier"),
    shell:
        "python -m missingu.cli train-classifier --config-json {params.config} --data {input.train}"
        " --test {input.test} --out {output.model} --record {output.record} --threads {threads} --no-progress"
        " 2> {log}"


rule evaluate:
    input:
        samples=rules.sample.output.images,
        summary=rules.sample.output.summary,
        classifier=rules.train_classifier.output.model,
        train=prepared("train"),
        test=prepared("test"),
        weights=rules.fetch_weights.output[0],
    output:
        record=f"{RESULTS['evaluate']}.json",
        **beside(f"{RESULTS['evaluate']}.json", EVALUATE_SIDECARS),
    params:
        config=QUALITY_CONFIG,
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
        mem_mb=memory("evaluate"),
        runtime=runtime("evaluate"),
    shell:
        "TORCH_HOME={params.torch_home} python -m missingu.cli evaluate --config-json {params.config}"
        " --samples {input.samples} --summary {input.summary} --classifier {input.classifier}"
        " --data {input.train} --test {input.test} --out {output.record} --features {output.features}"
        " --torch-home {params.torch_home}"
        " --threads {threads} 2> {log}"


NOTEBOOKS["quality"] = {
    "input": {
        "quality": over(rules.evaluate.output.record, ("dataset", "model", "sampler")),
        "features": over(rules.evaluate.output.features, ("dataset", "model", "sampler")),
        "classifiers": expand(rules.train_classifier.output.record, dataset=DATASETS),
        "claims_file": CLAIMS_FILE,
    },
    "output": {
        "table": report(
            f"{RESULTS['tables']}/sample_quality.csv", caption="../report/quality/table.rst",
            category="Sample quality",
        ),
        "table_md": f"{RESULTS['tables']}/sample_quality.md",
        "claims": report(
            f"{RESULTS['tables']}/quality_vs_claims.csv", caption="../report/quality/vs_claims.rst",
            category="Sample quality",
        ),
        "claims_md": f"{RESULTS['tables']}/quality_vs_claims.md",
        "figures": report(
            expand(f"{RESULTS['figures']}/quality_vs_{{x}}_{{dataset}}.png", x=["calls", "time"], dataset=DATASETS),
            caption="../report/quality/figures.rst",
            category="Sample quality",
        ),
    },
    "parameters": {
        "records": records(("dataset", "model", "sampler"), quality=rules.evaluate.output.record,
                           features=rules.evaluate.output.features),
        "classifiers": records(("dataset",), record=rules.train_classifier.output.record),
        "claims_yaml": CLAIMS_FILE,
    },
}
