# The step-aware stage (DDSM): for every dataset, the slimmable model's baselines (each width, each
# mixed-in model alone, full width at low noise), an evolutionary search over per-step strategies,
# random strategies at the searched one's FLOPs and, when `stepaware.importance.enabled`, which
# steps matter (a smaller network over each window of steps); quality by the classifier Frechet
# distance. Present only when `stepaware.model` names a slimmable model entry.

import glob

from missingu.stepaware import SIDECARS as STEPAWARE_SIDECARS

STEPAWARE = bool(config.get("stepaware", {}).get("model"))
STEPAWARE_MODELS = [config["stepaware"]["model"], *config["stepaware"].get("mix", [])] if STEPAWARE else []
# the datasets its slimmable model is trained on (every model it mixes in is trained on them too)
STEPAWARE_DATASETS = EXPERIMENT.stepaware_datasets()
# the importance sweep's table is always written (without rows when it is off); its heatmap only when on
STEPAWARE_FIGURES = ["heatmap", "pareto"] + (["importance"] if EXPERIMENT.stepaware.importance.enabled else [])
# the published strategies (DDSM's CIFAR-10 one): each a baseline where it fits the study; an edit reruns it
PUBLISHED = os.path.join(workflow.basedir, "config", "strategies")


if STEPAWARE:

    rule stepaware:
        input:
            checkpoints=expand(rules.train.output.model, model=STEPAWARE_MODELS, allow_missing=True),
            classifier=rules.train_classifier.output.model,
            train=prepared("train"),
            test=prepared("test"),
            weights=rules.fetch_weights.output[0],
            published=sorted(glob.glob(os.path.join(PUBLISHED, "*.yaml"))),
        output:
            table=f"{RESULTS['stepaware']}.csv",
            **beside(f"{RESULTS['stepaware']}.csv", STEPAWARE_SIDECARS),
        params:
            # a dataset's entry, the study's models and sampler, its settings and the classifier's
            config=config_slice(models=STEPAWARE_MODELS, samplers=[config["stepaware"]["sampler"]],
                                sections=("diffusion", "evaluate", "stepaware")),
            # the study's slimmable model and each model it mixes in
            checkpoints=lambda wildcards, input: flags("checkpoint", STEPAWARE_MODELS, input.checkpoints),
            torch_home=lambda wildcards, input: os.path.dirname(input.weights),
            published=lambda wildcards, input: " ".join(f"--published {path}" for path in input.published),
        log:
            "logs/stepaware/{dataset}.log",
        benchmark:
            "benchmarks/stepaware/{dataset}.tsv"
        conda:
            ENV
        threads: 1
        resources:
            gpu=gpus("stepaware", GPU),
            mem_mb=memory("stepaware"),
            runtime=runtime("stepaware"),
        shell:
            "python -m missingu.cli stepaware --config-json {params.config} {params.checkpoints}"
            " --classifier {input.classifier} --data {input.train} --test {input.test} --out {output.table}"
            " --history {output.history} --strategies {output.strategies} --strategy {output.strategy}"
            " --features {output.features} --record {output.record} --importance {output.importance}"
            " --torch-home {params.torch_home} {params.published}"
            " --threads {threads} 2> {log}"

    NOTEBOOKS["stepaware"] = {
        "input": {
            "tables": expand(rules.stepaware.output.table, dataset=STEPAWARE_DATASETS),
            "records": expand(rules.stepaware.output.record, dataset=STEPAWARE_DATASETS),
            "strategies": expand(rules.stepaware.output.strategies, dataset=STEPAWARE_DATASETS),
            "features": expand(rules.stepaware.output.features, dataset=STEPAWARE_DATASETS),
            "importance": expand(rules.stepaware.output.importance, dataset=STEPAWARE_DATASETS),
            "claims_file": CLAIMS_FILE,
        },
        "output": {
            "table": report(
                f"{RESULTS['tables']}/stepaware.csv", caption="../report/stepaware/table.rst", category="Step-aware"
            ),
            "table_md": f"{RESULTS['tables']}/stepaware.md",
            "claims": report(
                f"{RESULTS['tables']}/stepaware_vs_claims.csv", caption="../report/stepaware/table.rst",
                category="Step-aware",
            ),
            "claims_md": f"{RESULTS['tables']}/stepaware_vs_claims.md",
            "figures": report(
                expand(f"{RESULTS['figures']}/stepaware_{{kind}}_{{dataset}}.png", kind=STEPAWARE_FIGURES,
                       dataset=STEPAWARE_DATASETS),
                caption="../report/stepaware/table.rst",
                category="Step-aware",
            ),
        },
        "parameters": {
            "records": records(("dataset",), [{"dataset": d} for d in STEPAWARE_DATASETS], table=rules.stepaware.output.table,
                               record=rules.stepaware.output.record, strategies=rules.stepaware.output.strategies,
                               history=rules.stepaware.output.history, features=rules.stepaware.output.features,
                               importance=rules.stepaware.output.importance),
            "claims_yaml": CLAIMS_FILE,
        },
    }
