"""Names shared by the rules and the package: models, DPO variants, their labels, wildcards.

Standard library only: `rules/common.smk` imports this module at parse time, in whatever
environment runs Snakemake, and light rules (tables, merges) import it without torch.
"""

from __future__ import annotations

# The DPO-trained variants, each with its own pair set (scdpo.pairs.PAIR_SETS) and training job.
VARIANTS = ("dpo", "dpo_data_equal", "scdpo")
# Every evaluated model: the SFT model, then the variants, in table order.
MODELS = ("sft", *VARIANTS)
MODEL_LABELS = {
    "sft": "SFT",
    "dpo": "DPO",
    "dpo_data_equal": "DPO (data-equal)",
    "scdpo": "SCDPO",
}
# The kind of a step-controlled pair (naive pairs are "naive" or "naive_extra").
STEP_CONTROLLED = "step_controlled"
# Report comparisons (model, baseline): each variant against SFT, SCDPO against both baselines.
COMPARISONS = (
    ("dpo", "sft"),
    ("dpo_data_equal", "sft"),
    ("scdpo", "sft"),
    ("scdpo", "dpo"),
    ("scdpo", "dpo_data_equal"),
)


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def model_order(model: str) -> int:
    """Table position of a model (unknown names last)."""
    return MODELS.index(model) if model in MODELS else len(MODELS)


def temperature_name(value: float) -> str:
    """The {temperature} wildcard of a pilot grid value: 0.0 -> '0', 1.25 -> '1.25'."""
    return format(float(value), "g")
