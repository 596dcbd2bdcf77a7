# The analysis notebooks, one rule each from the stages' declarations (NOTEBOOKS, see common.smk),
# run by papermill: `<stage>_notebook` executes notebooks/<stage>.ipynb with the stage's paths as
# parameters. The executed copy is a log first, so a failing notebook leaves
# logs/notebooks/<stage>.ipynb with the error; on success it is copied to results/notebooks/.

# Run a notebook with papermill; the executed copy is a log first (kept when the notebook fails).
PAPERMILL = (
    "python -m papermill {input.notebook} {log.notebook} -k python3 --cwd . -y {params.parameters}"
    " 2> {log.stderr} && cp {log.notebook} {output.notebook}"
)

for _stage, _declared in NOTEBOOKS.items():

    rule:
        name:
            f"{_stage}_notebook"
        input:
            notebook=os.path.join(workflow.basedir, "notebooks", f"{_stage}.ipynb"),
            **_declared["input"],
        output:
            notebook=f"{RESULTS['notebooks']}/{_stage}.ipynb",
            **_declared["output"],
        params:
            parameters=shlex.quote(json.dumps({**_declared["parameters"], "tables_dir": RESULTS["tables"],
                                               "figures_dir": RESULTS["figures"]})),
        log:
            notebook=f"logs/notebooks/{_stage}.ipynb",
            stderr=f"logs/notebooks/{_stage}.log",
        benchmark:
            f"benchmarks/notebooks/{_stage}.tsv"
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
        f"{RESULTS['notebooks']}/{{name}}.ipynb",
    output:
        f"{RESULTS['notebooks']}/{{name}}.html",
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
