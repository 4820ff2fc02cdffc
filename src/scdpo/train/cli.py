"""SFT and DPO with TRL on one code path: config first, then models, then a resumable train."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from scdpo import gpu
from scdpo.jsonl import read_jsonl
from scdpo.train.checkpoint import (
    EXIT_RESUMABLE,
    CheckpointPolicy,
    CheckpointStore,
    ResumableCallback,
    run_key,
)
from scdpo.train.launch import relaunch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _precision(recipe: dict) -> dict:
    """TRL defaults to bf16 and gradient checkpointing; both are wrong on CPU."""
    on_gpu = torch.cuda.is_available()
    return {
        "bf16": bool(recipe.get("bf16", True)) and on_gpu and torch.cuda.is_bf16_supported(),
        # transformers 5 renamed gradient_checkpointing (a deprecated alias now).
        "activation_checkpointing": bool(recipe.get("gradient_checkpointing", False)) and on_gpu,
        "use_cpu": not on_gpu,
    }


def common_args(recipe: dict, out_dir: Path) -> dict:
    """TrainingArguments shared by SFT and DPO; checkpoints are saved by ResumableCallback."""
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
        # The callback decides when to save (steps, minutes, signals); HF's own rotation would
        # count half-written checkpoints.
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        **_precision(recipe),
    }


def model_kwargs(recipe: dict) -> dict:
    """from_pretrained arguments: the recipe's dtype and the fastest attention available."""
    from transformers.utils import is_flash_attn_2_available

    on_gpu = torch.cuda.is_available()
    dtype = recipe.get("dtype", "auto")
    if dtype == "auto":
        dtype = "bfloat16" if on_gpu else "float32"
    attention = recipe.get("attn_implementation", "auto")
    if attention == "auto":
        attention = "flash_attention_2" if on_gpu and is_flash_attn_2_available() else "sdpa"
    log.info("model dtype %s, attention %s", dtype, attention)
    return {
        "dtype": _DTYPES[dtype],
        "attn_implementation": attention,
        "trust_remote_code": bool(recipe.get("trust_remote_code", False)),
    }


def load_model(model_dir: str, recipe: dict):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, **model_kwargs(recipe))


def load_tokenizer(model_dir: str, recipe: dict):
    from transformers import AutoTokenizer

    trust = bool(recipe.get("trust_remote_code", False))
    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)


def _sft_rows(path: str) -> list[dict]:
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(path)]


def _pair_rows(path: str) -> list[dict]:
    if not path:
        return []
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_jsonl(path)]


def build_config(stage: str, recipe: dict, out_dir: Path, tokenizer, has_eval: bool):
    """SFTConfig/DPOConfig. Built BEFORE any model loads: with DeepSpeed ZeRO-3 the config
    registers itself (HfDeepSpeedConfig) so that from_pretrained partitions at load time."""
    args = common_args(recipe, out_dir)
    if stage == "sft":
        from trl import SFTConfig

        return SFTConfig(
            **args, completion_only_loss=True, packing=False, eos_token=tokenizer.eos_token
        )
    from trl import DPOConfig

    return DPOConfig(**args, beta=recipe["beta"], eval_strategy="epoch" if has_eval else "no")


def build_trainer(stage: str, config, recipe: dict, model_dir: str, data: dict, tokenizer):
    """Load the models (after the config, see build_config) and the TRL trainer."""
    from datasets import Dataset

    model = load_model(model_dir, recipe)
    if stage == "sft":
        from trl import SFTTrainer

        return SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(data["train"]),
            processing_class=tokenizer,
        )
    from trl import DPOTrainer

    return DPOTrainer(
        model=model,
        ref_model=load_model(model_dir, recipe),
        args=config,
        train_dataset=Dataset.from_list(data["train"]),
        eval_dataset=Dataset.from_list(data["eval"]) if data["eval"] else None,
        processing_class=tokenizer,
    )


def _save_output(trainer, tokenizer, out_dir: Path, facts: dict) -> None:
    trainer.save_model(str(out_dir))  # every rank takes part (ZeRO-3 gathers); rank 0 writes
    if not trainer.args.should_save:
        return
    tokenizer.save_pretrained(out_dir)
    history = list(trainer.state.log_history)
    (out_dir / "training_log.json").write_text(json.dumps({**facts, "history": history}, indent=1))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _log_overhead(callback: ResumableCallback) -> dict:
    overhead = callback.overhead()
    log.info(
        "checkpoints: %d saved in %.1f s, %.2f%% of %.1f s training",
        overhead["checkpoints_saved"],
        overhead["checkpoint_seconds"],
        100 * overhead["checkpoint_share"],
        overhead["train_seconds"],
    )
    return overhead


def _facts(stage: str, data: dict, result, resume: Path | None) -> dict:
    if stage == "sft":
        facts = {"examples": len(data["train"])}
    else:
        facts = {"train_pairs": len(data["train"]), "eval_pairs": len(data["eval"])}
    return {**facts, **result.metrics, "resumed_from_step": _step(resume) if resume else 0}


def _parallelism(trainer) -> dict:
    """How the run was spread: processes, accelerate's distributed type, DeepSpeed's ZeRO stage."""
    accelerator = trainer.accelerator
    plugin = accelerator.deepspeed_plugin  # None without DeepSpeed
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type.value),
        "zero_stage": plugin.zero_stage if plugin is not None else None,
    }


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def _resume_point(trainer, store: CheckpointStore) -> Path | None:
    # Every rank must see the main process's clean-up before looking for a checkpoint.
    trainer.accelerator.wait_for_everyone()
    resume = store.latest()
    if resume:
        log.info("resuming from %s (step %d)", resume, _step(resume))
    else:
        log.info("no checkpoint of this run in %s: training from step 0", store.dir)
    return resume


def _ended(trainer, code: int) -> int:
    """`code`, once the process group is destroyed: left to the interpreter's exit, gloo's threads
    can abort a rank ("terminate called without an active exception") after the work is done."""
    trainer.accelerator.end_training()
    return code


def train(stage: str, args: argparse.Namespace, recipe: dict) -> int:
    """Train, resuming the newest complete checkpoint of this exact run; 0, or EXIT_RESUMABLE
    when a signal stopped it after a checkpoint."""
    data = {"train": (_sft_rows if stage == "sft" else _pair_rows)(args.data)}
    data["eval"] = _pair_rows(args.eval_data or "") if stage == "dpo" else []
    inputs = {"model": args.model, "data": args.data, "eval_data": args.eval_data}
    store = CheckpointStore(args.checkpoint_dir, run_key(stage, recipe, inputs, _world_size()))
    callback = ResumableCallback(store, CheckpointPolicy.from_recipe(recipe))
    callback.stop.install()  # before loading: a signal during a 20B load must not kill the job
    tokenizer = load_tokenizer(args.model, recipe)
    config = build_config(stage, recipe, store.dir, tokenizer, bool(data["eval"]))
    store.prepare(config.should_save)
    trainer = build_trainer(stage, config, recipe, args.model, data, tokenizer)
    trainer.add_callback(callback)
    resume = _resume_point(trainer, store)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    overhead = _log_overhead(callback)
    if callback.stopped:
        log.warning("stopped by a signal at step %d; re-run to resume", trainer.state.global_step)
        return _ended(trainer, EXIT_RESUMABLE)
    facts = {**_facts(stage, data, result, resume), **_parallelism(trainer), **overhead}
    if stage == "dpo" and data["eval"]:
        facts["eval"] = trainer.evaluate()
    _save_output(trainer, tokenizer, Path(args.out), facts)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        store.remove_all()  # the output is complete
    return _ended(trainer, 0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scdpo.train", description=sys.modules["scdpo.train"].__doc__
    )
    parser.add_argument("stage", choices=["sft", "dpo"])
    parser.add_argument("--model", required=True, help="model directory to start from")
    parser.add_argument("--data", required=True, help="training JSONL")
    parser.add_argument("--eval-data", help="held-out pairs JSONL (dpo)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--recipe", required=True, help="JSON of the config's sft/dpo block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--checkpoint-dir",
        required=True,
        help="root of this job's checkpoints; outside --out, which Snakemake deletes on failure",
    )
    parser.add_argument(
        "--launcher",
        default="python",
        help="'python' (this process) or an `accelerate launch ...` line; a free port is added",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    gpu.preflight("training")  # a driver too old for torch's CUDA build fails here, not on the CPU
    relaunch(args.launcher, argv)
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of each info line, from rank 0
    torch.set_num_threads(max(1, args.threads))
    code = train(args.stage, args, json.loads(args.recipe))
    sys.exit(code)
