"""SFT and DPO training with TRL, behind one CLI for `python -m` or `accelerate launch -m`.

    python -m scdpo.train sft --model DIR --data sft.jsonl --out DIR --recipe '{...}'
    accelerate launch --config_file envs/accelerate/zero3.yaml -m scdpo.train dpo ...

The recipe is the JSON of the config's `sft` or `dpo` block; the rule passes it as a param so a
changed hyper-parameter re-runs exactly the trainings it affects.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from scdpo.jsonl import read_jsonl

log = logging.getLogger(__name__)


def _precision(recipe: dict) -> dict:
    """TRL defaults to bf16 and gradient checkpointing; both are wrong on CPU."""
    on_gpu = torch.cuda.is_available()
    return {
        "bf16": bool(recipe.get("bf16", True)) and on_gpu and torch.cuda.is_bf16_supported(),
        "gradient_checkpointing": bool(recipe.get("gradient_checkpointing", False)) and on_gpu,
        "use_cpu": not on_gpu,
    }


def _common_args(recipe: dict, out_dir: Path) -> dict:
    return {
        "output_dir": str(out_dir),
        "learning_rate": recipe["learning_rate"],
        "num_train_epochs": recipe["epochs"],
        "max_steps": recipe.get("max_steps", -1),
        "per_device_train_batch_size": recipe["batch_size"],
        "per_device_eval_batch_size": recipe["batch_size"],
        "gradient_accumulation_steps": recipe["gradient_accumulation_steps"],
        "lr_scheduler_type": recipe["lr_scheduler"],
        "warmup_steps": recipe["warmup_ratio"],  # a float < 1 is a ratio of the total steps
        "max_length": recipe["max_length"],
        "seed": recipe["seed"],
        "logging_steps": recipe.get("logging_steps", 10),
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        **_precision(recipe),
    }


def _load_policy(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, tokenizer


def _save(trainer, tokenizer, out_dir: Path, facts: dict) -> None:
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    history = [entry for entry in trainer.state.log_history]
    (out_dir / "training_log.json").write_text(json.dumps({**facts, "history": history}, indent=1))


def run_sft(model_dir: str, data_path: str, out_dir: str, recipe: dict) -> None:
    """Full fine-tune on prompt/completion pairs; the loss covers the completion only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(data_path)]
    model, tokenizer = _load_policy(model_dir)
    config = SFTConfig(
        **_common_args(recipe, Path(out_dir)),
        completion_only_loss=True,
        packing=False,
        eos_token=tokenizer.eos_token,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    result = trainer.train()
    _save(trainer, tokenizer, Path(out_dir), {"examples": len(rows), **result.metrics})


def run_dpo(model_dir: str, train_path: str, eval_path: str, out_dir: str, recipe: dict) -> None:
    """DPO from the SFT model with the SFT model as the frozen reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    def rows(path: str) -> list[dict]:
        return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_jsonl(path)]

    train_rows, eval_rows = rows(train_path), rows(eval_path)
    model, tokenizer = _load_policy(model_dir)
    reference, _ = _load_policy(model_dir)
    args = _common_args(recipe, Path(out_dir))
    config = DPOConfig(
        **args,
        beta=recipe["beta"],
        eval_strategy="epoch" if eval_rows else "no",
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
    )
    result = trainer.train()
    facts = {"train_pairs": len(train_rows), "eval_pairs": len(eval_rows), **result.metrics}
    if eval_rows:
        facts["eval"] = trainer.evaluate()
    _save(trainer, tokenizer, Path(out_dir), facts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scdpo.train", description=__doc__)
    parser.add_argument("stage", choices=["sft", "dpo"])
    parser.add_argument("--model", required=True, help="model directory to start from")
    parser.add_argument("--data", required=True, help="training JSONL")
    parser.add_argument("--eval-data", help="held-out pairs JSONL (dpo)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--recipe", required=True, help="JSON of the config's sft/dpo block")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(max(1, args.threads))
    recipe = json.loads(args.recipe)
    if args.stage == "sft":
        run_sft(args.model, args.data, args.out, recipe)
    else:
        run_dpo(args.model, args.data, args.eval_data or "", args.out, recipe)


if __name__ == "__main__":
    main()
