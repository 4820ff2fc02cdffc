"""One function per workflow stage: paths and config blocks in, files out.

The workflow scripts are thin wrappers around these; tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from scdpo import pairs as pair_sets
from scdpo.generation.backends import make_backend
from scdpo.generation.loop import LoopSettings, LoopStats
from scdpo.generation.runner import describe, fingerprint, run_resumable, shard_slice
from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.problems import load_problems
from scdpo.solution import Block, NoiseLimits, render_prompt, render_solution
from scdpo.tasks import (
    SCHEDULE_PRESETS,
    AnswerTask,
    SamplingSettings,
    SamplingTask,
    StepControlSettings,
    StepControlTask,
    TemperatureSchedule,
)

log = logging.getLogger(__name__)
VARIANTS = ("dpo", "dpo_data_equal", "scdpo")
MODELS = ("sft", *VARIANTS)


# --- a. problems ----------------------------------------------------------------------------------


def prepare_problems(sources: dict | list[dict], solution_format: str, out_path: str) -> None:
    """One source or several (e.g. GSM8K and MATH train); a `tag` prefixes a source's ids."""
    problems = []
    for source in sources if isinstance(sources, list) else [sources]:
        loaded = load_problems(source, solution_format)
        if source["source"] == "jsonl":
            digest = hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
            log.info("%s: sha256 %s, %d problems", source["path"], digest, len(loaded))
        if not loaded:
            raise ValueError(f"problem source {source} yielded no problems")
        for problem in loaded:
            if "tag" in source:
                problem["id"] = f"{source['tag']}:{problem['id']}"
            if "max_sc_pairs" in source:
                problem["max_sc_pairs"] = source["max_sc_pairs"]
        problems += loaded
    ids = [p["id"] for p in problems]
    if len(set(ids)) < len(ids):
        raise ValueError("problem ids collide across sources: give each source a distinct `tag`")
    write_jsonl(out_path, problems)
    log.info("wrote %d problems to %s", len(problems), out_path)


def sft_examples(problems_path: str, system: str, out_path: str) -> None:
    """Prompt/completion pairs from problems that carry a reference solution."""
    examples = []
    for problem in read_jsonl(problems_path):
        if "blocks" not in problem:
            continue
        blocks = [Block.from_json(b) for b in problem["blocks"]]
        examples.append(
            {
                "id": problem["id"],
                "prompt": render_prompt(problem["question"], system),
                "completion": render_solution(blocks),
            }
        )
    if not examples:
        raise ValueError(f"{problems_path}: no problem has a reference solution ('blocks') for SFT")
    write_jsonl(out_path, examples)


# --- b. base model --------------------------------------------------------------------------------


def build_base_model(spec: dict, sft_data_path: str, out_dir: str) -> None:
    from scdpo.modeling import build_base_model as build

    corpus = (r["prompt"] + r["completion"] for r in read_jsonl(sft_data_path))
    facts = build(spec, corpus, out_dir)
    log.info("base model: %s", json.dumps(facts))


# --- d, g, j. generation --------------------------------------------------------------------------


def loop_settings(generation: dict, seed: int) -> LoopSettings:
    return LoopSettings(
        max_new_tokens=generation["max_new_tokens"],
        max_calls=generation["max_calls"],
        max_prompt_tokens=generation["max_prompt_tokens"],
        seed=seed,
    )


def sandbox_pool(sandbox: dict, workers: int):
    """The executor pool of a config's `sandbox` block."""
    from scdpo.sandbox import SandboxConfig, SandboxPool

    config = SandboxConfig(
        timeout=sandbox["timeout"],
        max_output_chars=sandbox["max_output_chars"],
        memory_mb=sandbox["memory_mb"],
        allow_unsandboxed=sandbox["allow_unsandboxed"],
    )
    return SandboxPool(workers=workers, config=config)


def _input_stamp(*paths: str) -> list:
    """Size and mtime of inputs, so a resume file from an older model or data is not reused."""
    stamp = []
    for path in paths:
        for file in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if file.is_file():
                info = file.stat()
                stamp.append((str(file), info.st_size, info.st_mtime_ns))
    return stamp


def _generate(
    items: list[dict],
    make_task: Callable[[dict], object],
    model_dir: str,
    params: dict,
    out_path: str,
    resume_path: str,
    desc: str,
    threads: int,
) -> LoopStats:
    from scdpo.modeling import set_threads

    set_threads(threads)
    generation = params["generation"]
    settings = loop_settings(generation, params["seed"])
    key = fingerprint(params, _input_stamp(model_dir))
    with sandbox_pool(params["sandbox"], workers=max(1, threads)) as pool:
        records, stats = run_resumable(
            items,
            make_tasks=lambda chunk: [make_task(item) for item in chunk],
            records_of=lambda tasks: [task.record() for task in tasks],
            backend_factory=lambda: make_backend(generation["backend"], model_dir),
            executor=pool,
            settings=settings,
            resume_path=resume_path,
            key=key,
            chunk_size=generation["chunk_size"],
            desc=desc,
        )
    write_jsonl(out_path, records)
    if os.path.exists(resume_path):
        os.remove(resume_path)
    return stats


def _noise(params: dict) -> NoiseLimits:
    return NoiseLimits(**params["noise"])


def sampling_settings(params: dict) -> SamplingSettings:
    """Naive sampling as an experiment's `sampling`, `system_prompt` and `noise` blocks say."""
    sampling = params["sampling"]
    return SamplingSettings(
        temperature=sampling["temperature"],
        max_samples=sampling["max_samples"],
        round_size=sampling["round_size"],
        system=params["system_prompt"],
        noise=_noise(params),
    )


def sample_solutions(
    model_dir: str,
    problems_path: str,
    shard: int,
    shards: int,
    params: dict,
    out_path: str,
    resume_path: str,
    threads: int,
) -> None:
    """Naive sampling of one shard of the training questions."""
    problems = shard_slice(list(read_jsonl(problems_path)), shard, shards)
    settings = sampling_settings(params)
    stats = _generate(
        problems,
        lambda p: SamplingTask(p, settings),
        model_dir,
        params,
        out_path,
        resume_path,
        f"sampling shard {shard + 1}/{shards}",
        threads,
    )
    _log_sampling(out_path, stats)


def _log_sampling(path: str, stats: LoopStats) -> None:
    records = list(read_jsonl(path))
    samples = [s for r in records for s in r["samples"]]
    pairs = sum(
        any(s["preferred"] for s in r["samples"]) and any(s["dispreferred"] for s in r["samples"])
        for r in records
    )
    log.info(
        "shard: questions %d; samples drawn %d (preferred %d, dispreferred %d, noisy %d); "
        "naive pairs %d; %s",
        len(records),
        len(samples),
        sum(s["preferred"] for s in samples),
        sum(s["dispreferred"] for s in samples),
        sum(s["noisy"] for s in samples),
        pairs,
        describe(stats),
    )


def schedule_from(spec: dict) -> TemperatureSchedule:
    """`schedule: paper | released_code` or explicit {start, step, cap}."""
    if isinstance(spec, str):
        return SCHEDULE_PRESETS[spec]
    return TemperatureSchedule(spec["start"], spec["step"], spec["cap"])


def step_controlled_negatives(
    model_dir: str,
    samples_path: str,
    shard: int,
    shards: int,
    params: dict,
    out_path: str,
    resume_path: str,
    threads: int,
) -> None:
    """Continuations from split points of each question's first preferred solution."""
    questions = [q for q in read_jsonl(samples_path) if any(s["preferred"] for s in q["samples"])]
    questions = shard_slice(questions, shard, shards)
    step = params["step_control"]
    settings = StepControlSettings(
        schedule=schedule_from(step["schedule"]),
        max_tries=step["max_tries"],
        max_pairs=step["max_pairs"],
        system=params["system_prompt"],
        seed=params["seed"],
        noise=_noise(params),
    )

    def make_task(question: dict) -> StepControlTask:
        chosen = next(s for s in question["samples"] if s["preferred"])
        return StepControlTask(question, [Block.from_json(b) for b in chosen["blocks"]], settings)

    stats = _generate(
        questions,
        make_task,
        model_dir,
        params,
        out_path,
        resume_path,
        f"step-controlled shard {shard + 1}/{shards}",
        threads,
    )
    records = list(read_jsonl(out_path))
    log.info(
        "shard: questions %d (with a negative %d); tries %d; step-controlled negatives %d; %s",
        len(records),
        sum(bool(q["negatives"]) for q in records),
        sum(sum(q["tries"].values()) for q in records),
        sum(len(q["negatives"]) for q in records),
        describe(stats),
    )


def predict(
    model_dir: str, problems_path: str, params: dict, out_path: str, resume_path: str, threads: int
) -> None:
    """Greedy (or fixed-temperature) answers with code execution, one record per question."""
    problems = list(read_jsonl(problems_path))
    temperature = params.get("temperature", 0.0)

    def make_task(problem: dict) -> AnswerTask:
        return AnswerTask(problem, temperature, params["system_prompt"], _noise(params))

    _generate(problems, make_task, model_dir, params, out_path, resume_path, "predict", threads)
    records = list(read_jsonl(out_path))
    accuracy = sum(r["correct"] for r in records) / len(records)
    log.info("accuracy %.4f on %d questions", accuracy, len(records))


def merge_shards(shard_paths: list[str], out_path: str) -> None:
    write_jsonl(out_path, (record for path in shard_paths for record in read_jsonl(path)))


# --- f, h. pairs ----------------------------------------------------------------------------------


def build_pairs(
    variant: str,
    samples_path: str,
    negatives_path: str | None,
    model_dir: str,
    params: dict,
    out_dir: str,
) -> None:
    """One DPO dataset (dpo, dpo_data_equal or scdpo) with its held-out split and length report.

    Plain DPO reads only the naive samples, so changing step-controlled generation leaves it be.
    """
    from transformers import AutoTokenizer

    system, seed = params["system_prompt"], params["seed"]
    sampled = list(read_jsonl(samples_path))
    naive = pair_sets.naive_pairs(sampled, system)
    sc = []
    if variant != "dpo":
        sc = pair_sets.step_controlled_pairs(list(read_jsonl(negatives_path)), system)
    pairs = {
        "dpo": lambda: naive,
        "dpo_data_equal": lambda: pair_sets.data_equal_pairs(
            sampled, system, len(naive) + len(sc), seed
        ),
        "scdpo": lambda: pair_sets.mix(naive, sc, seed=seed),
    }[variant]()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    kept, report = pair_sets.length_report(pairs, count, params["dpo"]["max_length"])
    train, held_out = pair_sets.split_eval(kept, params["pairs"]["eval_fraction"], seed)
    if not train:
        raise ValueError(f"{variant}: no training pairs left (report: {report})")
    write_jsonl(Path(out_dir) / "train.jsonl", train)
    write_jsonl(Path(out_dir) / "eval.jsonl", held_out)
    summary = {
        **report,
        "train": len(train),
        "eval": len(held_out),
        "by_kind": pair_sets.counts_by_kind(kept),
    }
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    log.info("%s: %s", variant, json.dumps(summary))
    if report["pairs_kept"] < report["pairs_in"]:
        log.warning(
            "%s: %d pairs exceed max_length %d and were dropped (not truncated)",
            variant,
            report["pairs_in"] - report["pairs_kept"],
            report["max_length"],
        )


# --- k. table -------------------------------------------------------------------------------------


def accuracy_table(prediction_paths: dict, pair_summaries: dict, out_csv: str, out_md: str) -> None:
    """Paper Table 1's shape: a row per (experiment, model), a column per benchmark, pair counts.

    `prediction_paths` maps (experiment, model, benchmark) -> predictions JSONL;
    `pair_summaries` maps (experiment, variant) -> that variant's pairs summary.json.
    """
    import pandas as pd

    rows: dict[tuple[str, str], dict] = {}
    for (experiment, model, benchmark), path in prediction_paths.items():
        records = list(read_jsonl(path))
        row = rows.setdefault((experiment, model), {"experiment": experiment, "model": model})
        row[benchmark] = round(100 * sum(r["correct"] for r in records) / len(records), 1)
        row[f"{benchmark} n"] = len(records)
    for (experiment, variant), path in pair_summaries.items():
        summary = json.loads(Path(path).read_text())
        kinds = summary["by_kind"]
        row = rows[(experiment, variant)]
        row["pairs"] = summary["train"] + summary["eval"]
        row["naive pairs"] = kinds.get("naive", 0) + kinds.get("naive_extra", 0)
        row["step-controlled pairs"] = kinds.get("step_controlled", 0)
    order = {name: i for i, name in enumerate(MODELS)}
    table = pd.DataFrame(sorted(rows.values(), key=lambda r: (r["experiment"], order[r["model"]])))
    table["model"] = table["model"].map(MODEL_LABELS)
    table.to_csv(out_csv, index=False)
    Path(out_md).write_text(table.to_markdown(index=False) + "\n")


MODEL_LABELS = {
    "sft": "SFT",
    "dpo": "DPO",
    "dpo_data_equal": "DPO (data-equal)",
    "scdpo": "SCDPO",
}
