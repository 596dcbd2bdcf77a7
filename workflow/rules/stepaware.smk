# The step-aware stage (DDSM): for every study (the `stepaware` section, named `stepaware.name`, and
# each of `stepaware.studies`) on every dataset its slimmable model is trained on, that model's
# baselines (each width, each mixed-in model alone, full width at low noise), an evolutionary
# search over per-step strategies, random strategies at the searched one's FLOPs and, when the
# study's `importance.enabled`, which steps matter (a smaller network over each window of steps);
# quality by the classifier Frechet distance or FID. Present only when `stepaware.model` names a
# slimmable model entry.

import glob

from missingu.config import to_dict
from missingu.specs.stepaware import SIDECARS as STEPAWARE_SIDECARS

STEPAWARE = bool(EXPERIMENT.stepaware.model)
# every study (stepaware.name, then each of stepaware.studies): its slimmable model and the models it mixes in
STUDIES = {sa.name: sa for sa in EXPERIMENT.stepaware.each()}
STUDY_MODELS = {name: [sa.model, *sa.mix] for name, sa in STUDIES.items()}
# (dataset, study) of every study on every dataset its slimmable model is trained on
STUDY_RUNS = [{"dataset": d, "study": s} for d, s in EXPERIMENT.stepaware_runs()]
# the importance sweep's table is always written (without rows when it is off); its heatmap only where on
STUDY_FIGURES = [f"stepaware_{kind}_{run['dataset']}_{run['study']}.png" for run in STUDY_RUNS
                 for kind in ["heatmap", "pareto"] + (["importance"] if STUDIES[run["study"]].importance.enabled else [])]
# the published strategies (DDSM's CIFAR-10 one): each a baseline where it fits the study; an edit reruns it
PUBLISHED = os.path.join(workflow.basedir, "config", "strategies")


if STEPAWARE:

    rule stepaware:
        input:
            checkpoints=lambda wildcards: expand(rules.train.output.model, model=STUDY_MODELS[wildcards.study],
                                                 dataset=wildcards.dataset),
            classifier=rules.train_classifier.output.model,
            train=prepared("train"),
            test=prepared("test"),
            weights=rules.fetch_weights.output[0],
            published=sorted(glob.glob(os.path.join(PUBLISHED, "*.yaml"))),
        output:
            table=f"{RESULTS['stepaware']}.csv",
            **beside(f"{RESULTS['stepaware']}.csv", STEPAWARE_SIDECARS),
        params:
            # a dataset's entry, the study's models and sampler, its settings (the section's keys with
            # its own on top: an edit reruns the studies it reaches) and the classifier's
            config=lambda wildcards: config_slice(models=STUDY_MODELS[wildcards.study],
                                                  samplers=[STUDIES[wildcards.study].sampler],
                                                  sections=("diffusion", "evaluate"),
                                                  extra=lambda w: {"stepaware": to_dict(STUDIES[w.study])})(wildcards),
            # the study's slimmable model and each model it mixes in
            checkpoints=lambda wildcards, input: flags("checkpoint", STUDY_MODELS[wildcards.study], input.checkpoints),
            torch_home=lambda wildcards, input: os.path.dirname(input.weights),
            published=lambda wildcards, input: " ".join(f"--published {path}" for path in input.published),
        log:
            "logs/stepaware/{dataset}/{study}.log",
        benchmark:
            "benchmarks/stepaware/{dataset}/{study}.tsv"
        conda:
            ENV
        threads: 1
        resources:
            gpu=gpus("stepaware", GPU),
            mem_mb=memory("stepaware"),
            runtime=runtime("stepaware"),
        shell:
            "python -m missingu.cli stepaware --config-json {params.config} --study {wildcards.study} {params.checkpoints}"
            " --classifier {input.classifier} --data {input.train} --test {input.test} --out {output.table}"
            " --history {output.history} --strategies {output.strategies} --strategy {output.strategy}"
            " --features {output.features} --record {output.record} --importance {output.importance}"
            " --torch-home {params.torch_home} {params.published}"
            " --threads {threads} 2> {log}"

    NOTEBOOKS["stepaware"] = {
        "input": {
            "tables": [rules.stepaware.output.table.format(**run) for run in STUDY_RUNS],
            "records": [rules.stepaware.output.record.format(**run) for run in STUDY_RUNS],
            "strategies": [rules.stepaware.output.strategies.format(**run) for run in STUDY_RUNS],
            "features": [rules.stepaware.output.features.format(**run) for run in STUDY_RUNS],
            "importance": [rules.stepaware.output.importance.format(**run) for run in STUDY_RUNS],
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
                [f"{RESULTS['figures']}/{name}" for name in STUDY_FIGURES],
                caption="../report/stepaware/table.rst",
                category="Step-aware",
            ),
        },
        "parameters": {
            "records": records(("dataset", "study"), STUDY_RUNS, table=rules.stepaware.output.table,
                               record=rules.stepaware.output.record, strategies=rules.stepaware.output.strategies,
                               history=rules.stepaware.output.history, features=rules.stepaware.output.features,
                               importance=rules.stepaware.output.importance),
            "claims_yaml": CLAIMS_FILE,
        },
    }
