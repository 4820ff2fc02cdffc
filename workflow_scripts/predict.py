"""j. A model's answers on a benchmark: evaluation, and the pilot at a fixed temperature."""

from _workflow import resume_file, to_log

to_log(snakemake.log[0])

from scdpo.evaluate import evaluation_stage
from scdpo.generation.job import run_stage

params = snakemake.params.generation
run_stage(
    evaluation_stage(snakemake.input.questions, params),
    snakemake.input.model,
    params,
    snakemake.output[0],
    resume_file(snakemake.output[0], snakemake.wildcards.exp),
    snakemake.threads,
)
