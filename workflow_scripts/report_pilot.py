from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.pilot import pilot_report

# The pilot folders with what each holds ([benchmark, [temperature names]]).
paths = {
    (benchmark, float(name)): f"{folder}/t{name}.jsonl"
    for folder, (benchmark, names) in zip(
        snakemake.input.pilot, snakemake.params.pilot, strict=True
    )
    for name in names
}
pilot_report(
    paths,
    snakemake.output.csv,
    snakemake.output.png,
    f"{snakemake.wildcards.exp}: SFT accuracy vs sampling temperature",
    **snakemake.params.statistics,
)
