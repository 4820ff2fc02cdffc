from _workflow import to_log

to_log(snakemake.log[0])

from pathlib import Path

from scdpo.pipeline import accuracy_table

# results/{exp}/predictions/{model}/{benchmark}.jsonl
predictions = {
    (Path(p).parts[-4], Path(p).parts[-2], Path(p).stem): p for p in snakemake.input.predictions
}
# results/{exp}/pairs/{variant}/summary.json
summaries = {(Path(p).parts[-4], Path(p).parts[-2]): p for p in snakemake.input.pairs}
accuracy_table(predictions, summaries, snakemake.output.csv, snakemake.output.md)
