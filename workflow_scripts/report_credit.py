from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.results.credit_pages import credit_report

settings = dict(snakemake.params.credit)
beta, variants = settings.pop("beta"), settings.pop("variants")
credit_report(
    snakemake.input.reference,
    {variant: snakemake.input[variant] for variant in variants},
    snakemake.input.eval,
    snakemake.input.train,
    beta,
    settings,
    snakemake.output,
    snakemake.threads,
)
