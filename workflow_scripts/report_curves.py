from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.train.curves import plot_curves, write_curves_csv

runs = {
    name: f"{folder}/tensorboard"
    for name, folder in zip(snakemake.params.names, snakemake.input, strict=True)
}
write_curves_csv(runs, snakemake.output.csv)
plot_curves(runs, snakemake.output.png)
