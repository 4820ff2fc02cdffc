from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.generation.job import merge_shards

merge_shards(list(snakemake.input), snakemake.output[0])
