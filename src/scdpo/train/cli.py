"""SFT and DPO with TRL on one code path: config first, then models, then a resumable train.
Also the reference log-probs of a pair set, computed once for every DPO training on it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

from scdpo import gpu
from scdpo.jsonl import read_jsonl
from scdpo.train import packing, reference
from scdpo.train.checkpoint import (
    EXIT_RESUMABLE,
    CheckpointPolicy,
    CheckpointStore,
    ResumableCallback,
    run_key,
)
from scdpo.train.curves import CurvesCallback
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
        # TensorBoard files come from scdpo.train.curves (no tensorboard package); wandb is HF's.
        "report_to": [r for r in recipe.get("report_to", ["tensorboard"]) if r != "tensorboard"],
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


def _pair_rows(path: str, keys=("prompt", "chosen", "rejected")) -> list[dict]:
    if not path:
        return []
    return [{k: r.get(k) for k in keys} for r in read_jsonl(path)]


def precomputed(recipe: dict) -> bool:
    """Whether a DPO training reads its reference log-probs from a file (scdpo.train.reference)."""
    value = recipe.get("reference", "live")
    if value not in ("live", "precomputed"):
        raise SystemExit(f"reference: {value!r} is not live or precomputed")
    return value == "precomputed"


def build_config(stage: str, recipe: dict, out_dir: Path, tokenizer, has_eval: bool):
    """SFTConfig/DPOConfig. Built BEFORE any model loads: with DeepSpeed ZeRO-3 the config
    registers itself (HfDeepSpeedConfig) so that from_pretrained partitions at load time."""
    args = common_args(recipe, out_dir)
    if stage != "sft" and packing.mode(recipe) != "none":
        raise SystemExit("packing is an SFT recipe key: set it in the sft block")
    if stage == "sft" and precomputed(recipe):
        raise SystemExit("reference is a DPO recipe key: set it in the dpo block")
    if stage == "sft":
        from trl import SFTConfig as config_class

        args.update(packing.sft_args(recipe))
        args.update(completion_only_loss=True, eos_token=tokenizer.eos_token)
    else:
        from trl import DPOConfig as config_class

        args.update(
            beta=recipe["beta"],
            eval_strategy="epoch" if has_eval else "no",
            # The reference-logps stage computes them; a precomputed training reads them.
            precompute_ref_log_probs=stage == "reference-logps" or precomputed(recipe),
        )
    return config_class(**args, **passed_through(recipe, config_class, args))


def passed_through(recipe: dict, config_class: type, set_here: dict) -> dict:
    """The recipe's `trainer_args`: arguments of the TRL config class that no recipe key sets."""
    import trl

    from scdpo.trainer_args import argument_names

    extra = recipe.get("trainer_args") or {}
    unknown = sorted(set(extra) - set(argument_names(config_class)))
    if unknown:
        raise SystemExit(
            f"trainer_args: {unknown} {'is' if len(unknown) == 1 else 'are'} not "
            f"{'an argument' if len(unknown) == 1 else 'arguments'} of trl.{config_class.__name__} "
            f"(TRL {trl.__version__}; its arguments: help(trl.{config_class.__name__}))"
        )
    taken = sorted(set(extra) & set(set_here))
    if taken:
        raise SystemExit(
            f"trainer_args: {taken} already set from the recipe's own keys "
            "(config/schema.yaml, $defs.recipe): set them there"
        )
    return extra


def build_trainer(stage: str, config, recipe: dict, model_dir: str, data: dict, tokenizer):
    """Load the models (after the config, see build_config) and the TRL trainer."""
    from datasets import Dataset

    model = load_model(model_dir, recipe)
    if stage == "sft":
        packing.check_model(recipe, model)
        return packing.trainer_class(recipe)(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(data["train"]),
            processing_class=tokenizer,
        )
    if config.precompute_ref_log_probs:  # the rows carry the reference log-probs
        return reference.build_trainer(model, config, data, tokenizer)
    from trl import DPOTrainer

    return DPOTrainer(
        model=model,
        ref_model=load_model(model_dir, recipe),
        args=config,
        train_dataset=Dataset.from_list(data["train"]),
        eval_dataset=Dataset.from_list(data["eval"]) if data["eval"] else None,
        processing_class=tokenizer,
    )


def _save_output(trainer, tokenizer, out_dir: Path, facts: dict, curves: Path | None = None):
    trainer.save_model(str(out_dir))  # every rank takes part (ZeRO-3 gathers); rank 0 writes
    if not trainer.args.should_save:
        return
    tokenizer.save_pretrained(out_dir)
    if curves is not None and curves.is_dir():  # the whole run's event files, resumed parts too
        shutil.copytree(curves, out_dir / "tensorboard", dirs_exist_ok=True)
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


def _data(stage: str, args: argparse.Namespace, recipe: dict) -> dict:
    """The training rows; a precomputed DPO training's rows carry their reference log-probs."""
    data = {"train": (_sft_rows if stage == "sft" else _pair_rows)(args.data)}
    data["eval"] = _pair_rows(args.eval_data or "") if stage == "dpo" else []
    if stage != "dpo" or precomputed(recipe) == bool(args.reference_logps):
        if stage == "dpo" and args.reference_logps:
            table = reference.read_logps(args.reference_logps)
            for split in ("train", "eval"):
                data[split] = reference.attach(data[split], table, args.reference_logps)
        return data
    raise SystemExit(
        "reference: precomputed needs --reference-logps FILE (and a live reference none)"
    )


def _curves(args: argparse.Namespace, recipe: dict, store: CheckpointStore) -> Path | None:
    """Where this run's TensorBoard files go: <--logging-dir>/<run key>, else beside its
    checkpoints; kept across a resume (same key), apart from other runs' (another recipe, data or
    model), copied into the output at the end. None without `tensorboard`."""
    if "tensorboard" not in recipe.get("report_to", ["tensorboard"]):
        return None
    if args.logging_dir:
        return Path(args.logging_dir) / store.dir.name
    return store.dir / "tensorboard"


def train(stage: str, args: argparse.Namespace, recipe: dict) -> int:
    """Train, resuming the newest complete checkpoint of this exact run; 0, or EXIT_RESUMABLE
    when a signal stopped it after a checkpoint."""
    data = _data(stage, args, recipe)
    inputs = {"model": args.model, "data": args.data, "eval_data": args.eval_data}
    inputs["reference_logps"] = args.reference_logps
    store = CheckpointStore(args.checkpoint_dir, run_key(stage, recipe, inputs, _world_size()))
    callback = ResumableCallback(store, CheckpointPolicy.from_recipe(recipe))
    callback.stop.install()  # before loading: a signal during a 20B load must not kill the job
    tokenizer = load_tokenizer(args.model, recipe)
    config = build_config(stage, recipe, store.dir, tokenizer, bool(data["eval"]))
    store.prepare(config.should_save)
    trainer = build_trainer(stage, config, recipe, args.model, data, tokenizer)
    trainer.add_callback(callback)
    curves = _curves(args, recipe, store)
    if curves is not None:
        trainer.add_callback(CurvesCallback(curves))
    resume = _resume_point(trainer, store)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    overhead = _log_overhead(callback)
    if callback.stopped:
        log.warning("stopped by a signal at step %d; re-run to resume", trainer.state.global_step)
        return _ended(trainer, EXIT_RESUMABLE)
    facts = {**_facts(stage, data, result, resume), **_parallelism(trainer), **overhead}
    if stage == "dpo" and data["eval"]:
        facts["eval"] = trainer.evaluate()
    _save_output(trainer, tokenizer, Path(args.out), facts, curves)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        store.remove_all()  # the output is complete
    return _ended(trainer, 0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scdpo.train", description=sys.modules["scdpo.train"].__doc__
    )
    parser.add_argument("stage", choices=["sft", "dpo", "reference-logps"])
    parser.add_argument("--model", required=True, help="model directory to start from")
    parser.add_argument("--data", required=True, help="training JSONL")
    parser.add_argument("--eval-data", help="held-out pairs JSONL (dpo, reference-logps)")
    parser.add_argument(
        "--out", required=True, help="output model directory (reference-logps: the JSONL file)"
    )
    parser.add_argument(
        "--reference-logps",
        help="dpo with `reference: precomputed`: the reference-logps stage's file of these pairs",
    )
    parser.add_argument(
        "--logging-dir",
        help="TensorBoard event files while training (default: beside the checkpoints)",
    )
    parser.add_argument("--recipe", required=True, help="JSON of the config's sft/dpo block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--checkpoint-dir",
        help="root of this job's checkpoints; outside --out, which Snakemake deletes on failure "
        "(sft, dpo)",
    )
    parser.add_argument(
        "--launcher",
        default="python",
        help="'python' (this process) or an `accelerate launch ...` line; a free port is added",
    )
    args = parser.parse_args(argv)
    if args.stage != "reference-logps" and not args.checkpoint_dir:
        parser.error(f"{args.stage} needs --checkpoint-dir")
    return args


def reference_logps(args: argparse.Namespace, recipe: dict) -> int:
    """The SFT model's reference log-probs of every pair (scdpo.train.reference), to --out."""
    import tempfile

    keys = ("id", "prompt", "chosen", "rejected")
    data = {"train": _pair_rows(args.data, keys), "eval": _pair_rows(args.eval_data or "", keys)}
    recipe = reference.job_recipe(recipe)
    tokenizer = load_tokenizer(args.model, recipe)
    with tempfile.TemporaryDirectory(prefix="scdpo-reference-") as scratch:
        config = build_config("reference-logps", recipe, Path(scratch), tokenizer, False)
        model = load_model(args.model, recipe)
        records = reference.compute_logps(model, config, data, tokenizer)
        reference.write_logps(args.out, records, config.should_save)
    return 0


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
    recipe = json.loads(args.recipe)
    if args.stage == "reference-logps":
        code = reference_logps(args, recipe)
    else:
        code = train(args.stage, args, recipe)
    sys.exit(code)
