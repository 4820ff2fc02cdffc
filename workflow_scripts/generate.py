"""The generation rules: naive sampling and step-controlled shards, evaluation and the pilot."""

from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.evaluate import evaluation_stage
from scdpo.generation.job import run_stage
from scdpo.sampling import sampling_stage
from scdpo.step_control import step_control_stage

params = snakemake.params.generation
if snakemake.rule in ("eval_predict", "pilot_predict"):
    stage = evaluation_stage(snakemake.input.questions, params)
else:
    make_stage = {
        "solutions_sample": sampling_stage,
        "negatives_step_controlled": step_control_stage,
    }[snakemake.rule]
    shard, shards = int(snakemake.wildcards.shard), int(snakemake.wildcards.shards)
    stage = make_stage(snakemake.input.questions, shard, shards, params)
run_stage(
    stage,
    snakemake.input.model,
    params,
    snakemake.output[0],
    snakemake.params.resume,
    snakemake.threads,
)
