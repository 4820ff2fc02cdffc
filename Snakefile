# Step-Controlled DPO: from raw problems to the accuracy table. Stages, in order:
#   problems -> base model -> SFT -> naive sampling -> step-controlled negatives -> pairs
#   -> DPO / DPO (data-equal) / SCDPO -> predictions per benchmark -> table
# rules/common.smk reads and checks the config; params.smk, inputs.smk and targets.smk hold the
# functions the rules call; every other file under rules/ is one stage.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless the command line names config files (`--configfile`): merging the
# two would add the default's experiments to every real run. `--config k=v` alone is merged onto
# the default (Snakemake applies the command line's values after the file's).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# `snakemake --report` renders every output flagged report(...) into one self-contained page.
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/params.smk"
include: "rules/inputs.smk"
include: "rules/targets.smk"
include: "rules/fetch.smk"
include: "rules/problems.smk"
include: "rules/model.smk"
include: "rules/sampling.smk"
include: "rules/step_control.smk"
include: "rules/pairs.smk"
include: "rules/dpo.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


# Seconds of CPU each, no GPU: on a cluster they run beside Snakemake (the login node) instead of
# waiting in the queue longer than they run. hub_fetch runs there because the login node reaches
# the hub, which compute nodes often cannot.
localrules:
    hub_fetch,
    problems_prepare,
    benchmark_prepare,
    sft_data,
    pairs_build,
    solutions_merge,
    negatives_merge,
    table_accuracy,
    pilot_problems,
    pilot_plot,
    training_curves,
    data_stats,
    table_cost,


rule all:
    default_target: True
    input:
        "results/accuracy.csv",
        "results/accuracy.md",
        report_outputs,
        "results/tables/cost.html",
