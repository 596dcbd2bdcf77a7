# The Snakemake report of this run (figures and tables with their captions). It is the same file as
# `snakemake --report results/report.html`: the rule runs that command for the run's other outputs,
# with the run's effective config, without taking the lock the running workflow holds.
rule report:
    input:
        final_outputs(),
    output:
        "results/report.html",
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
