from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.names import VARIANTS
from scdpo.results.credit_pages import credit_report

settings = dict(snakemake.params.credit)
beta = settings.pop("beta")
credit_report(
    snakemake.input.reference,
    {variant: snakemake.input[variant] for variant in VARIANTS},
    snakemake.input.eval,
    snakemake.input.train,
    beta,
    settings,
    snakemake.output,
    snakemake.threads,
)
