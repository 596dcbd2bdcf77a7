# The denoising stage: every trained model as a Gaussian denoiser of its dataset's test images
# (metric weights from the data stage's fetch_weights).

from missingu.specs.denoise import SIDECARS as DENOISE_SIDECARS


rule denoise:
    input:
        model=rules.train.output.model,
        data=prepared("test"),
        weights=rules.fetch_weights.output[0],
    output:
        summary=f"{RESULTS['denoise']}.csv",
        **beside(f"{RESULTS['denoise']}.csv", DENOISE_SIDECARS),
    params:
        config=config_slice(models=["{model}"], sections=("diffusion", "denoise")),
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
        mem_mb=memory("denoise"),
        runtime=runtime("denoise"),
    shell:
        "TORCH_HOME={params.torch_home} python -m missingu.cli denoise --config-json {params.config}"
        " --checkpoint {input.model} --data {input.data} --out {output.summary} --curves {output.curves}"
        " --images {output.images} --examples {output.examples} --record {output.record}"
        " --torch-home {params.torch_home} --threads {threads} --no-progress 2> {log}"


NOTEBOOKS["denoise"] = {
    "input": {
        **{what: over(getattr(rules.denoise.output, what))
           for what in ("summary", "curves", "images", "examples")},
        "claims_file": CLAIMS_FILE,
    },
    "output": {
        "table": report(
            f"{RESULTS['tables']}/denoise.csv", caption="../report/denoise/table.rst", category="Denoising"
        ),
        "table_md": f"{RESULTS['tables']}/denoise.md",
        "claims": report(
            f"{RESULTS['tables']}/denoise_vs_claims.csv", caption="../report/denoise/vs_claims.rst",
            category="Denoising",
        ),
        "claims_md": f"{RESULTS['tables']}/denoise_vs_claims.md",
        "curves": report(
            expand(f"{RESULTS['figures']}/denoise_curves_{{dataset}}.png", dataset=DATASETS),
            caption="../report/denoise/curves.rst",
            category="Denoising",
        ),
        "examples": report(
            expand(f"{RESULTS['figures']}/denoise_examples_{{dataset}}.png", dataset=DATASETS),
            caption="../report/denoise/examples.rst",
            category="Denoising",
        ),
    },
    "parameters": {
        "runs": records(("dataset", "model"), summary=rules.denoise.output.summary, curves=rules.denoise.output.curves,
                        images=rules.denoise.output.images, examples=rules.denoise.output.examples),
        "claims_yaml": CLAIMS_FILE,
    },
}
