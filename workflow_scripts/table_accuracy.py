from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.accuracy import accuracy_report, pair_file_keys, prediction_keys

accuracy_report(
    prediction_keys(snakemake.input.predictions),
    pair_file_keys(snakemake.input.pairs),
    snakemake.output,
    **snakemake.params.statistics,
    power=snakemake.params.power,
)
