from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.problems import sft_examples

sft_examples(snakemake.input[0], snakemake.params.system_prompt, snakemake.output[0])
