# Step-Controlled DPO: from raw problems to the accuracy table. Stages, in order:
#   problems -> base model -> SFT -> naive sampling -> step-controlled negatives -> pairs
#   -> DPO / DPO (data-equal) / SCDPO -> predictions per benchmark -> table


include: "rules/common.smk"
include: "rules/problems.smk"
include: "rules/model.smk"
include: "rules/sampling.smk"
include: "rules/step_control.smk"
include: "rules/pairs.smk"
include: "rules/dpo.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


localrules:
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
