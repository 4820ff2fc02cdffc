from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.pipeline import predict

predict(
    snakemake.input.model,
    snakemake.input.problems,
    snakemake.params.generation,
    snakemake.output[0],
    snakemake.params.resume,
    snakemake.threads,
)
