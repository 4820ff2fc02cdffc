from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.accuracy import pair_file_keys
from scdpo.results.data_stats import data_stats_report

data_stats_report(
    snakemake.input.samples,
    snakemake.input.negatives,
    {variant: paths for (_, variant), paths in pair_file_keys(snakemake.input.pairs).items()},
    snakemake.params.paper_model,
    snakemake.output,
    f"{snakemake.wildcards.exp}: data statistics",
)
