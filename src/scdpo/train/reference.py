"""The SFT reference model's log-probs of every pair, computed once and read by every DPO training.

DPO's loss needs log pi_ref(chosen | prompt) and log pi_ref(rejected | prompt), the reference model
being the SFT model, which does not change during training. TRL's DPOTrainer recomputes them on
every step with a second copy of the model; with `dpo.reference: precomputed` the workflow computes
them once per (experiment, pair set) (`python workflow_scripts/train.py reference-logps`) and every
training and seed on those pairs reads the file instead: no reference model in memory, no reference
forward per step.

Computed exactly as TRL computes them for its loss: the same DPOTrainer does the tokenisation, EOS,
prompt/completion split, `max_length` truncation and collation (`_prepare_dataset`, its collator),
and its own `compute_ref_log_probs` does the forward; only the loop is ours, so that each value is
written beside its pair. The training then runs TRL's `precompute_ref_log_probs=True` path, its
reference log-probs taken from the dataset's `ref_chosen_logps` / `ref_rejected_logps` columns
(which TRL's collator and loss already read) instead of TRL's own pre-pass.

The file (JSONL, one line per pair of the pair files, train then eval, in file order) keys each
value by a digest of the pair's prompt, chosen and rejected text: the training finds every pair's
values whatever their order, and a pair the file does not hold fails the job by name. A pair TRL
drops (its prompt alone fills `max_length`) has null values; TRL drops it in training as well.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

from scdpo.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
_ROW = "_scdpo_row"  # the input row a prepared example came from (TRL's filter drops some)
# Recipe keys the reference log-probs depend on. A rule computing them once for every training and
# seed keys its job on these alone (learning rate, beta, seeds and epochs change nothing here).
RECIPE_KEYS = (
    "max_length",
    "batch_size",
    "dtype",
    "attn_implementation",
    "bf16",
    "trust_remote_code",
    "trainer_args",  # some change the tokenised pairs (e.g. max_prompt_length): kept, to be safe
)


# What the rest of a DPO recipe holds, for a reference job given RECIPE_KEYS alone (none of it
# changes the values: no optimizer step, no shuffling, dropout off).
_UNUSED = {
    "learning_rate": 1e-6,
    "epochs": 1,
    "gradient_accumulation_steps": 1,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "seed": 0,
    "beta": 0.1,
    "report_to": [],
}


def job_recipe(recipe: dict) -> dict:
    """The recipe a reference job builds its DPOTrainer with: the given keys (the whole DPO
    block, or RECIPE_KEYS alone), the rest filled."""
    missing = [k for k in ("max_length", "batch_size") if k not in recipe]
    if missing:
        raise SystemExit(f"reference-logps: the recipe needs {missing}")
    return {**_UNUSED, **recipe, "report_to": []}


def pair_digest(row: dict) -> str:
    """What identifies a pair for its reference log-probs: its three texts."""
    text = "\0".join((row["prompt"], row["chosen"], row["rejected"]))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _trainer_class():
    from trl import DPOTrainer

    class ReferenceDPOTrainer(DPOTrainer):
        """DPOTrainer with `precompute_ref_log_probs=True` whose reference log-probs come with the
        datasets (COLUMNS) instead of TRL's pre-pass; `compute_only` builds it without them, for
        computing them (compute_logps)."""

        compute_only = False

        def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
            if self.compute_only:
                return dataset
            missing = [c for c in COLUMNS if c not in dataset.column_names]
            if missing:
                raise ValueError(f"{name} pairs have no {missing}: pass --reference-logps")
            for column in COLUMNS:
                if any(math.isnan(v) for v in dataset[column]):
                    raise ValueError(
                        f"a {name} pair kept for training has no reference log-probs in the file "
                        "(computed with another max_length?)"
                    )
            return dataset

    return ReferenceDPOTrainer


def build_trainer(model, config, data: dict, tokenizer, compute_only: bool = False):
    """The DPO trainer without a reference model; `data["train"]` / `data["eval"]` rows carry
    COLUMNS (attach) unless `compute_only`."""
    from datasets import Dataset

    assert config.precompute_ref_log_probs, "the config must be built with precomputed=True"
    trainer_class = _trainer_class()
    trainer_class.compute_only = compute_only
    return trainer_class(
        model=model,
        ref_model=None,
        args=config,
        train_dataset=Dataset.from_list(data["train"]),
        eval_dataset=Dataset.from_list(data["eval"]) if data["eval"] else None,
        processing_class=tokenizer,
    )


def _logps(trainer, dataset, batch_size: int) -> dict[int, tuple[float, float]]:
    """TRL's reference pass (DPOTrainer._precompute_ref_logps) over a prepared dataset, each value
    kept with the input row it belongs to."""
    import torch
    from torch.utils.data import DataLoader
    from trl.models import prepare_deepspeed

    rows = dataset[_ROW]
    loader = DataLoader(
        dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]),
        batch_size=batch_size,
        collate_fn=trainer.data_collator,
        num_workers=0,
        shuffle=False,
    )
    loader = trainer.accelerator.prepare(loader)
    if trainer.is_deepspeed_enabled:  # parameters still on CPU (ZeRO-1/2) or sharded (ZeRO-3)
        # One inference engine for every split, kept where TRL keeps its own: a second engine
        # around the same ZeRO-3 model breaks its parameter trace ("pop from an empty deque").
        if trainer._precompute_engine is None:
            trainer._precompute_engine = prepare_deepspeed(trainer.model, trainer.accelerator)
        model = trainer._precompute_engine
    else:
        model = trainer.model
    chosen, rejected = [], []
    for batch in loader:
        pair = trainer.compute_ref_log_probs(model, batch)
        pair = trainer.accelerator.gather_for_metrics(pair)
        chosen.append(pair[0].float().cpu())
        rejected.append(pair[1].float().cpu())
    chosen, rejected = torch.cat(chosen).tolist(), torch.cat(rejected).tolist()
    assert len(chosen) == len(rows), (len(chosen), len(rows))
    return {row: (c, r) for row, c, r in zip(rows, chosen, rejected, strict=True)}


def compute_logps(model, config, data: dict, tokenizer) -> list[dict]:
    """One record per pair of data["train"] then data["eval"]: its digest and reference
    log-probs (None where TRL drops the pair)."""
    numbered = {s: [{**row, _ROW: i} for i, row in enumerate(data[s])] for s in ("train", "eval")}
    trainer = build_trainer(model, config, numbered, tokenizer, compute_only=True)
    batch_size = config.precompute_ref_batch_size or config.per_device_train_batch_size
    records = []
    for split, dataset in (("train", trainer.train_dataset), ("eval", trainer.eval_dataset)):
        values = _logps(trainer, dataset, batch_size) if dataset is not None else {}
        for i, row in enumerate(data[split]):
            chosen, rejected = values.get(i, (None, None))
            records.append(
                {
                    "split": split,
                    "line": i + 1,
                    "id": row.get("id"),
                    "digest": pair_digest(row),
                    COLUMNS[0]: chosen,
                    COLUMNS[1]: rejected,
                }
            )
        dropped = len(data[split]) - len(values)
        if dropped:
            log.warning("%d %s pairs have no reference log-probs (TRL drops them)", dropped, split)
    trainer.accelerator.wait_for_everyone()
    return records


def write_logps(path: str | Path, records: list[dict], is_main: bool) -> None:
    if is_main:
        count = write_jsonl(path, records)
        log.info("reference log-probs of %d pairs written to %s", count, path)


def read_logps(path: str | Path) -> dict[str, tuple[float, float]]:
    """digest -> (chosen, rejected); NaN where the file has null (a pair TRL drops)."""
    table = {}
    for record in read_jsonl(path):
        values = tuple(math.nan if record[c] is None else record[c] for c in COLUMNS)
        table[record["digest"]] = values
    return table


def attach(rows: list[dict], table: dict[str, tuple[float, float]], path: str) -> list[dict]:
    """`rows` with COLUMNS from `table`; a pair missing from it fails, naming it."""
    attached = []
    for line, row in enumerate(rows, start=1):
        values = table.get(pair_digest(row))
        if values is None:
            raise SystemExit(
                f"{path} has no reference log-probs for pair {row.get('id')!r} (line {line} of its "
                "pair file): it was computed for other pairs; re-run the reference-logps job"
            )
        attached.append({**row, COLUMNS[0]: values[0], COLUMNS[1]: values[1]})
    return attached
