from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.report import cost_report

cost_report(
    snakemake.params.benchmarks,
    snakemake.params.experiments,
    snakemake.params.gpus,
    snakemake.output,
)
