from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.data_stats import data_stats_report

data_stats_report(
    snakemake.input.samples,
    snakemake.input.negatives,
    snakemake.output,
    f"{snakemake.wildcards.exp}: data statistics",
)
