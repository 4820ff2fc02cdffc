from pathlib import Path

from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.pairs import build_pairs

build_pairs(
    snakemake.wildcards.variant,
    snakemake.input.samples,
    snakemake.input.get("negatives"),
    snakemake.input.model,
    snakemake.params.pairs,
    str(Path(snakemake.output.summary).parent),
)
