"""d-e. One shard of naive sampling."""

from _workflow import resume_file, to_log

to_log(snakemake.log[0])

from scdpo.generation.job import run_stage
from scdpo.sampling import sampling_stage

params = snakemake.params.generation
shard, shards = int(snakemake.wildcards.shard), int(snakemake.wildcards.shards)
run_stage(
    sampling_stage(snakemake.input.questions, shard, shards, params),
    snakemake.input.model,
    params,
    snakemake.output[0],
    resume_file(snakemake.output[0], snakemake.wildcards.exp),
    snakemake.threads,
)
