from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.accuracy import pair_files
from scdpo.results.data_stats import data_stats_report

pairs = pair_files(snakemake.input.pairs, snakemake.params.pairs)

data_stats_report(
    snakemake.input.samples,
    snakemake.input.negatives,
    {variant: paths for (_, variant), paths in pairs.items()},
    snakemake.params.paper_model,
    snakemake.output,
    f"{snakemake.wildcards.exp}: data statistics",
)
