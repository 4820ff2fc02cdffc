# Step-Controlled DPO: from raw problems to the accuracy table. Stages, in order:
#   problems -> base model -> SFT -> naive sampling -> step-controlled negatives -> pairs
#   -> DPO / DPO (data-equal) / SCDPO -> predictions per benchmark -> table


include: "rules/common.smk"
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
# waiting in the queue longer than they run; the problem and benchmark rules also fetch datasets
# from the hub there, which compute nodes often cannot reach.
localrules:
    problems_prepare,
    benchmark_prepare,
    sft_data,
    pairs_build,
    solutions_merge,
    negatives_merge,
    table_accuracy,


rule all:
    default_target: True
    input:
        "results/accuracy.csv",
        "results/accuracy.md",
        report_outputs,
        "results/tables/cost.html",
