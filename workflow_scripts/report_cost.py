from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.cost import cost_report

cost_report(
    list(snakemake.input.benchmarks),
    snakemake.params.benchmarks,
    snakemake.params.gpus,
    snakemake.output,
)
