from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.pipeline import sample_solutions

sample_solutions(
    snakemake.input.model,
    snakemake.input.problems,
    int(snakemake.wildcards.shard),
    int(snakemake.wildcards.shards),
    snakemake.params.generation,
    snakemake.output[0],
    snakemake.params.resume,
    snakemake.threads,
)
