from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.modeling import set_threads
from scdpo.pipeline import build_base_model

set_threads(snakemake.threads)
build_base_model(snakemake.params.spec, snakemake.input.get("corpus"), snakemake.output[0])
