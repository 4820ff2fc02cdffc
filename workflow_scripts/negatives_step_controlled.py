from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.pipeline import step_controlled_negatives

step_controlled_negatives(
    snakemake.input.model,
    snakemake.input.samples,
    int(snakemake.wildcards.shard),
    int(snakemake.wildcards.shards),
    snakemake.params.generation,
    snakemake.output[0],
    snakemake.params.resume,
    snakemake.threads,
)
