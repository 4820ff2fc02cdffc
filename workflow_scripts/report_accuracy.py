from _workflow import to_log

to_log(snakemake.log[0])

from collections import defaultdict
from pathlib import Path

from scdpo.report import accuracy_report

# results/{exp}/predictions/{model}/{benchmark}.jsonl, results/{exp}/pairs/{variant}/{split}.jsonl
predictions = {
    (Path(p).parts[-4], Path(p).parts[-2], Path(p).stem): p for p in snakemake.input.predictions
}
pairs = defaultdict(list)
for p in snakemake.input.pairs:
    pairs[(Path(p).parts[-4], Path(p).parts[-2])].append(p)
accuracy_report(predictions, pairs, snakemake.output, **snakemake.params.statistics)
