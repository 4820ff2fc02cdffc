from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.accuracy import accuracy_report, pair_files, prediction_files

accuracy_report(
    prediction_files(snakemake.input.predictions, snakemake.params.predictions),
    pair_files(snakemake.input.pairs, snakemake.params.pairs),
    snakemake.output,
    **snakemake.params.statistics,
    power=snakemake.params.power,
)
