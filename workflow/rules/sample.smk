# The sampling stage: every trained model with every sampler entry; a PNG grid and a JSON summary
# (network calls, wall time, device) beside the samples.

from missingu.specs.samplers import SIDECARS as SAMPLE_SIDECARS


rule sample:
    input:
        rules.train.output.model,
    output:
        images=f"{RESULTS['sample']}.pt",
        **beside(f"{RESULTS['sample']}.pt", SAMPLE_SIDECARS),
        grid=f"{RESULTS['sample']}.png",
    params:
        config=config_slice(models=["{model}"], samplers=["{sampler}"], sections=("sample", "speed")),
    log:
        "logs/sample/{dataset}/{model}/{sampler}.log",
    benchmark:
        "benchmarks/sample/{dataset}/{model}/{sampler}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=gpus("sample", GPU),
        mem_mb=memory("sample"),
        runtime=runtime("sample"),
    shell:
        "python -m missingu.cli sample --config-json {params.config} --checkpoint {input} --out {output.images}"
        " --summary {output.summary} --grid {output.grid} --threads {threads} 2> {log}"


NOTEBOOKS["sample"] = {
    "input": {
        "summaries": over(rules.sample.output.summary, ("dataset", "model", "sampler")),
        "grids": over(rules.sample.output.grid, ("dataset", "model", "sampler")),
    },
    # with `samplers: []` there is nothing to tabulate or show: the notebook says so
    "output": {} if not SAMPLERS else {
        "sampling": report(
            f"{RESULTS['tables']}/sampling.csv", caption="../report/sample/sampling_table.rst", category="Tables"
        ),
        "sampling_md": f"{RESULTS['tables']}/sampling.md",
        "samples": report(
            expand(f"{RESULTS['figures']}/samples_{{dataset}}.png", dataset=DATASETS),
            caption="../report/sample/samples.rst",
            category="Figures",
        ),
    },
    "parameters": {
        "samples": records(("dataset", "model", "sampler"), summary=rules.sample.output.summary,
                           grid=rules.sample.output.grid),
    },
}
