"""j. A model's answers, one file per part, with one engine load: evaluation (a part per benchmark
of its experiment) and the pilot (a part per temperature on one benchmark)."""

from functools import partial

from _workflow import resume_file, to_log

to_log(snakemake.log[0])

from scdpo.evaluate import prediction_parts
from scdpo.generation.job import run_parts

parts = prediction_parts(
    snakemake.params.parts,
    snakemake.input.questions,
    snakemake.output[0],
    partial(resume_file, exp=snakemake.wildcards.exp),
)
run_parts(parts, snakemake.input.model, snakemake.threads, keep_resume=True)
