# Step-aware sampling (DDSM): for every dataset, the slimmable model's baselines (each width, each
# mixed-in model alone, full width at low noise), an evolutionary search over per-step strategies
# and random strategies at the searched one's FLOPs; quality by the classifier Frechet distance.
# Present only when `stepaware.model` names a slimmable model entry.

if STEPAWARE:

    rule stepaware:
        input:
            checkpoints=expand(rules.train.output.model, model=STEPAWARE_MODELS, allow_missing=True),
            classifier=rules.train_classifier.output.model,
            train=prepared("train"),
            test=prepared("test"),
            weights=rules.fetch_weights.output[0],
        output:
            table="results/stepaware/{dataset}/stepaware.csv",
            strategy="results/stepaware/{dataset}/stepaware.strategy.yaml",
            strategies="results/stepaware/{dataset}/stepaware.strategies.json",
            history="results/stepaware/{dataset}/stepaware.history.csv",
            record="results/stepaware/{dataset}/stepaware.json",
        params:
            config=stepaware_config,
            checkpoints=stepaware_checkpoint_args,
            torch_home=lambda wildcards, input: os.path.dirname(input.weights),
        log:
            "logs/stepaware/{dataset}.log",
        benchmark:
            "benchmarks/stepaware/{dataset}.tsv"
        conda:
            ENV
        threads: 1
        resources:
            gpu=gpus("stepaware", GPU),
            mem_mb=memory("stepaware", 3000, per_data_mb=3),
            runtime=runtime("stepaware", stepaware_minutes),
        shell:
            "python -m missingu.cli stepaware --config-json {params.config} {params.checkpoints}"
            " --classifier {input.classifier} --data {input.train} --test {input.test} --out {output.table}"
            " --torch-home {params.torch_home} --threads {threads} 2> {log}"

    rule stepaware_notebook:
        input:
            notebook=notebook("stepaware"),
            tables=expand(rules.stepaware.output.table, dataset=DATASETS),
            records=expand(rules.stepaware.output.record, dataset=DATASETS),
            claims=os.path.join(workflow.basedir, "config", "paper_claims.yaml"),
        output:
            notebook="results/notebooks/stepaware.ipynb",
            table=report("results/tables/stepaware.csv", caption="../report/stepaware.rst", category="Step-aware"),
            table_md="results/tables/stepaware.md",
            claims=report(
                "results/tables/stepaware_vs_claims.csv", caption="../report/stepaware.rst", category="Step-aware"
            ),
            claims_md="results/tables/stepaware_vs_claims.md",
            figures=report(
                expand("results/figures/stepaware_{kind}_{dataset}.png", kind=["heatmap", "pareto"], dataset=DATASETS),
                caption="../report/stepaware.rst",
                category="Step-aware",
            ),
        params:
            parameters=stepaware_parameters,
        log:
            notebook="logs/notebooks/stepaware.ipynb",
            stderr="logs/notebooks/stepaware.log",
        benchmark:
            "benchmarks/notebooks/stepaware.tsv"
        conda:
            ENV
        localrule: True
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        shell:
            PAPERMILL
