"""g. One shard of step-controlled generation."""

from _workflow import resume_file, to_log

to_log(snakemake.log[0])

from scdpo.generation.job import run_stage
from scdpo.step_control import step_control_stage

params = snakemake.params.generation
shard, shards = int(snakemake.wildcards.shard), int(snakemake.wildcards.shards)
run_stage(
    step_control_stage(snakemake.input.questions, shard, shards, params),
    snakemake.input.model,
    params,
    snakemake.output[0],
    resume_file(snakemake.output[0], snakemake.wildcards.exp),
    snakemake.threads,
)
