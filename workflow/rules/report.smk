# The end of the run: the one claims table (every claim of config/paper_claims.yaml beside what
# the stages measured for it) and the Snakemake report. The report is the same file as
# `snakemake --report results/report.html`: its rule runs that command for the run's other
# outputs, with the run's effective config, without taking the lock the running workflow holds.

# The stages whose notebook judges claims (a `claims` output), and their tables.
CLAIM_TABLES = {stage: getattr(rules, f"{stage}_notebook").output.claims
                for stage, declared in NOTEBOOKS.items() if "claims" in declared["output"]}


rule claims:
    input:
        claims_file=CLAIMS_FILE,
        tables=list(CLAIM_TABLES.values()),
    output:
        table=report(f"{RESULTS['tables']}/claims.csv", caption="../report/claims.rst", category="Claims"),
        table_md=f"{RESULTS['tables']}/claims.md",
    params:
        tables=flags("table", CLAIM_TABLES, CLAIM_TABLES.values()),
    log:
        "logs/claims.log",
    benchmark:
        "benchmarks/claims.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m missingu.cli claims --claims-file {input.claims_file} {params.tables} --out {output.table}"
        " 2> {log}"


rule report:
    input:
        final_outputs(),
    output:
        RESULTS["report"],
    params:
        snakefile=workflow.main_snakefile,
        config=lambda wildcards: shlex.quote(json.dumps(config, sort_keys=True)),
        targets=" ".join(shlex.quote(path) for path in final_outputs()),
    log:
        config="logs/report/config.json",
        stderr="logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    conda:
        ENV
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "printf '%s\\n' {params.config} > {log.config}"
        " && python -m snakemake --snakefile {params.snakefile} --directory . --configfile {log.config}"
        " --nolock --report {output} {params.targets} > {log.stderr} 2>&1"
