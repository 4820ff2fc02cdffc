from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.problems import prepare_problems

prepare_problems(
    snakemake.params.source,
    snakemake.params.get("solution_format", "code"),
    snakemake.output[0],
)
