from _workflow import to_log

to_log(snakemake.log[0])

from pathlib import Path

from scdpo.results.pilot import pilot_report

# results/{exp}/pilot/{benchmark}/t{temperature}.jsonl
paths = {(Path(p).parts[-2], float(Path(p).stem[1:])): p for p in snakemake.input}
pilot_report(
    paths,
    snakemake.output.csv,
    snakemake.output.png,
    f"{snakemake.wildcards.exp}: SFT accuracy vs sampling temperature",
    **snakemake.params.statistics,
)
