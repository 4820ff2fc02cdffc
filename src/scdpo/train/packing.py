"""SFT batches without padding: the recipe's `packing` (SFT recipes only).

- `none` (the default): one example per row, rows padded to the longest of the batch.
- `padding_free`: the same batches (the same examples in each optimizer step, in the same order),
  concatenated into one row with no pad tokens; each example's positions restart at 0. The loss is
  today's (the completion's tokens, summed over the step and divided by their count), so the
  training is today's up to float rounding, minus the compute spent on padding.
- `bfd`: TRL's best-fit-decreasing packing: whole examples (cut to `max_length` first) fill rows of
  at most `max_length` tokens, `batch_size` such rows per batch. An epoch has fewer, fuller steps,
  so the learning-rate schedule and warm-up stretch differently (docs/training.md).

Both keep per-example loss masking exact: labels are the completion's tokens only, and attention
never crosses from one example into another. Attention is cut at the examples' boundaries by
flash-attention's variable-length kernel (`cu_seq_lens`, on GPU with flash-attn installed) or, for
sdpa and eager, by the block-diagonal mask transformers builds from restarting `position_ids`
(exact: tests/test_train_packing.py; the attention then spans the whole packed row, so it saves
less there than flash-attention does). That mask needs the model to be transformers' own class and
TRL's `use_cache=False` in training: a model with its own modeling code (`trust_remote_code`, e.g.
InternLM2) ignores `position_ids` boundaries, so packing is refused for it. TRL's `wrapped`
strategy, which cuts examples mid-sequence and lets them attend to each other as the released
recipe did, is not offered.
"""

from __future__ import annotations

MODES = ("none", "padding_free", "bfd")
# Attention kernels that cut at the packed examples' boundaries (see the module docstring).
EXACT_ATTENTION = ("flash_attention_2", "flash_attention_3", "sdpa", "eager")


def mode(recipe: dict) -> str:
    value = recipe.get("packing", "none")
    if value not in MODES:
        raise SystemExit(f"packing: {value!r} is not one of {', '.join(MODES)}")
    return value


def sft_args(recipe: dict) -> dict:
    """SFTConfig arguments of the recipe's packing. padding_free alone needs max_length None in the
    config (TRL's guard); the trainer cuts examples to it itself (trainer_class)."""
    packing = mode(recipe)
    if packing == "none":
        return {"packing": False, "padding_free": False}
    if packing == "padding_free":
        return {"packing": False, "padding_free": True, "max_length": None}
    return {"packing": True, "packing_strategy": "bfd", "padding_free": True}


def check_model(recipe: dict, model) -> None:
    """Refuse packing where attention would cross examples (module docstring)."""
    if mode(recipe) == "none":
        return
    attention = model.config._attn_implementation
    builtin = type(model).__module__.startswith("transformers.")
    if attention not in EXACT_ATTENTION or not builtin or recipe.get("trust_remote_code"):
        raise SystemExit(
            f"packing: {mode(recipe)} needs a transformers model class and one of "
            f"{', '.join(EXACT_ATTENTION)} attention, so that examples do not attend to each "
            f"other; this model is {type(model).__module__}.{type(model).__name__} with "
            f"{attention}: set packing: none"
        )


def trainer_class(recipe: dict):
    """SFTTrainer, or for padding_free a subclass that cuts examples to max_length as TRL does
    for padded batches (keep_start, then drops those left without completion tokens)."""
    from trl import SFTTrainer

    if mode(recipe) != "padding_free":
        return SFTTrainer
    cut = recipe["max_length"]

    class PaddingFreeSFTTrainer(SFTTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, *rest, **kwargs):
            args.max_length = cut
            try:
                return super()._prepare_dataset(dataset, processing_class, args, *rest, **kwargs)
            finally:
                args.max_length = None

    return PaddingFreeSFTTrainer
