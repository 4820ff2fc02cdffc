from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.modeling import build_base_model_from_sft_data, set_threads

set_threads(snakemake.threads)
build_base_model_from_sft_data(
    snakemake.params.spec, snakemake.input.get("corpus"), snakemake.output[0]
)
