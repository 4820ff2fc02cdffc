"""Names shared by the rules and the package: models, DPO variants, their labels, wildcards.

Standard library only: `rules/common.smk` imports this module at parse time, in whatever
environment runs Snakemake, and light rules (tables, merges) import it without torch.
"""

from __future__ import annotations

# The DPO-trained variants, each with its own pair set (scdpo.pairs.PAIR_SETS) and training job.
# A new variant is a name here (with its label) and a pair builder there.
VARIANTS = ("dpo", "dpo_data_equal", "scdpo", "step_dpo")
# The paper's three, what an experiment trains unless its `variants` key says otherwise.
PAPER_VARIANTS = ("dpo", "dpo_data_equal", "scdpo")
# Every evaluated model: the SFT model, then the variants, in table order.
MODELS = ("sft", *VARIANTS)
MODEL_LABELS = {
    "sft": "SFT",
    "dpo": "DPO",
    "dpo_data_equal": "DPO (data-equal)",
    "scdpo": "SCDPO",
    "step_dpo": "Step-DPO",
}
# The kind of a step-controlled pair (naive pairs are "naive" or "naive_extra") and of a Step-DPO
# pair (shared prefix, then one step each).
STEP_CONTROLLED = "step_controlled"
STEP_LEVEL = "step_level"
# Report comparisons (model, baseline): each variant against SFT, SCDPO against the baselines.
COMPARISONS = (
    ("dpo", "sft"),
    ("dpo_data_equal", "sft"),
    ("scdpo", "sft"),
    ("step_dpo", "sft"),
    ("scdpo", "dpo"),
    ("scdpo", "dpo_data_equal"),
    ("scdpo", "step_dpo"),
)

# A DPO training repeated with another seed is its own model: "<variant>-seed<N>". The training
# with the recipe's own `seed` keeps the plain variant name, so adding seeds to a finished run
# reuses it.
SEED_MARK = "-seed"


def trained_name(variant: str, seed: int, recipe_seed: int) -> str:
    """The model name of one DPO training: 'scdpo' (the recipe's seed) or 'scdpo-seed2'."""
    return variant if seed == recipe_seed else f"{variant}{SEED_MARK}{seed}"


def seed_of(model: str, recipe_seed: int) -> int:
    """The DPO seed of a trained model's name (the recipe's seed for a plain variant name)."""
    _, mark, seed = model.partition(SEED_MARK)
    return int(seed) if mark else recipe_seed


def variant_of(model: str) -> str:
    """'scdpo-seed2' -> 'scdpo'; 'sft' -> 'sft'."""
    return model.split(SEED_MARK, 1)[0]


def model_label(model: str) -> str:
    variant = variant_of(model)
    label = MODEL_LABELS.get(variant, variant)
    return label + model[len(variant) :].replace(SEED_MARK, " seed ")


def model_order(model: str) -> int:
    """Table position of a model or of its variant (unknown names last)."""
    model = variant_of(model)
    return MODELS.index(model) if model in MODELS else len(MODELS)


def temperature_name(value: float) -> str:
    """The {temperature} wildcard of a pilot grid value: 0.0 -> '0', 1.25 -> '1.25'."""
    return format(float(value), "g")
