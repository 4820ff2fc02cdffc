from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.pilot import pilot_problems

pilot_problems(
    snakemake.input[0], snakemake.output[0], snakemake.params.limit, snakemake.params.seed
)
