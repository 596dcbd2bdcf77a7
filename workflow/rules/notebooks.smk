# Analysis notebooks run by papermill. The executed copy is a log first, so a failing notebook
# leaves logs/notebooks/<name>.ipynb with the error; on success it is copied to results/notebooks/.


rule results_notebook:
    input:
        notebook=notebook("results"),
        records=train_outputs("record"),
        losses=train_outputs("loss"),
        summaries=sample_outputs("summary"),
        grids=sample_outputs("grid"),
    output:
        notebook="results/notebooks/results.ipynb",
        training=report(
            "results/tables/training.csv", caption="../report/training_table.rst", category="Tables"
        ),
        training_md="results/tables/training.md",
        loss_curves=report(
            "results/figures/loss_curves.png", caption="../report/loss_curves.rst", category="Figures"
        ),
        # with `samplers: []` there is nothing to tabulate or show
        **({} if not SAMPLERS else dict(
            sampling=report(
                "results/tables/sampling.csv", caption="../report/sampling_table.rst", category="Tables"
            ),
            sampling_md="results/tables/sampling.md",
            samples=report(
                expand("results/figures/samples_{dataset}.png", dataset=DATASETS),
                caption="../report/samples.rst",
                category="Figures",
            ),
        )),
    params:
        parameters=notebook_parameters,
    log:
        notebook="logs/notebooks/results.ipynb",
        stderr="logs/notebooks/results.log",
    benchmark:
        "benchmarks/notebooks/results.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        PAPERMILL


rule efficiency_notebook:
    input:
        notebook=notebook("efficiency"),
        profile="results/profile/efficiency.csv",
        bench=rules.bench.output[0],
        claims=os.path.join(workflow.basedir, "config", "paper_claims.yaml"),
    output:
        notebook="results/notebooks/efficiency.ipynb",
        efficiency=report(
            "results/tables/efficiency.csv", caption="../report/efficiency_table.rst", category="Efficiency"
        ),
        efficiency_md="results/tables/efficiency.md",
        bench=report("results/tables/bench.csv", caption="../report/bench_table.rst", category="Efficiency"),
        bench_md="results/tables/bench.md",
        claims=report(
            "results/tables/efficiency_vs_claims.csv",
            caption="../report/efficiency_vs_claims.rst",
            category="Efficiency",
        ),
        claims_md="results/tables/efficiency_vs_claims.md",
        figure=report(
            "results/figures/efficiency_vs_claims.png",
            caption="../report/efficiency_vs_claims.rst",
            category="Efficiency",
        ),
    params:
        parameters=efficiency_parameters,
    log:
        notebook="logs/notebooks/efficiency.ipynb",
        stderr="logs/notebooks/efficiency.log",
    benchmark:
        "benchmarks/notebooks/efficiency.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        PAPERMILL


rule notebook_html:
    input:
        "results/notebooks/{name}.ipynb",
    output:
        "results/notebooks/{name}.html",
    log:
        "logs/notebook_html/{name}.log",
    benchmark:
        "benchmarks/notebook_html/{name}.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m nbconvert --to html --output-dir $(dirname {output}) {input} 2> {log}"


rule denoising_notebook:
    input:
        notebook=notebook("denoising"),
        summaries=denoise_outputs("summary"),
        curves=denoise_outputs("curves"),
        images=denoise_outputs("images"),
        examples=denoise_outputs("examples"),
        claims=os.path.join(workflow.basedir, "config", "paper_claims.yaml"),
    output:
        notebook="results/notebooks/denoising.ipynb",
        table=report("results/tables/denoising.csv", caption="../report/denoising_table.rst", category="Denoising"),
        table_md="results/tables/denoising.md",
        claims=report(
            "results/tables/denoising_vs_claims.csv", caption="../report/denoising_vs_claims.rst", category="Denoising"
        ),
        claims_md="results/tables/denoising_vs_claims.md",
        curves=report(
            expand("results/figures/denoising_curves_{dataset}.png", dataset=DATASETS),
            caption="../report/denoising_curves.rst",
            category="Denoising",
        ),
        examples=report(
            expand("results/figures/denoising_examples_{dataset}.png", dataset=DATASETS),
            caption="../report/denoising_examples.rst",
            category="Denoising",
        ),
    params:
        parameters=denoising_parameters,
    log:
        notebook="logs/notebooks/denoising.ipynb",
        stderr="logs/notebooks/denoising.log",
    benchmark:
        "benchmarks/notebooks/denoising.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        PAPERMILL


# Sample quality, and the one claims table that puts every claim beside what was measured for it
# (efficiency, the denoising task, sample quality).
rule quality_notebook:
    input:
        notebook=notebook("quality"),
        quality=quality_outputs(),
        classifiers=expand(rules.train_classifier.output.record, dataset=DATASETS),
        efficiency_claims=rules.efficiency_notebook.output.claims,
        denoising_claims=rules.denoising_notebook.output.claims,
        stepaware_claims=rules.stepaware_notebook.output.claims if STEPAWARE else [],
        claims=os.path.join(workflow.basedir, "config", "paper_claims.yaml"),
    output:
        notebook="results/notebooks/quality.ipynb",
        table=report(
            "results/tables/sample_quality.csv", caption="../report/sample_quality.rst", category="Sample quality"
        ),
        table_md="results/tables/sample_quality.md",
        versus=report(
            "results/tables/quality_vs_claims.csv", caption="../report/quality_vs_claims.rst", category="Sample quality"
        ),
        versus_md="results/tables/quality_vs_claims.md",
        claims=report("results/tables/claims.csv", caption="../report/claims.rst", category="Claims"),
        claims_md="results/tables/claims.md",
        figures=report(
            expand("results/figures/quality_vs_{x}_{dataset}.png", x=["calls", "time"], dataset=DATASETS),
            caption="../report/quality_figures.rst",
            category="Sample quality",
        ),
    params:
        parameters=quality_parameters,
    log:
        notebook="logs/notebooks/quality.ipynb",
        stderr="logs/notebooks/quality.log",
    benchmark:
        "benchmarks/notebooks/quality.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        PAPERMILL
