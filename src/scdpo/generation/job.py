"""A generation stage as one workflow job: engine, sandbox pool, shard, resume file, output.

Sampling, step-controlled generation and evaluation differ only in their task controllers; this
module runs any of them over a list of items with the experiment's `generation` and `sandbox`
blocks, and writes one record per item.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scdpo.generation.backends import make_backend
from scdpo.generation.loop import LoopSettings, LoopStats, Task
from scdpo.generation.runner import describe, fingerprint, run_resumable
from scdpo.jsonl import read_jsonl, write_jsonl

log = logging.getLogger(__name__)


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


def input_stamp(*paths: str) -> list:
    """Size and mtime of inputs, so a resume file from an older model or data is not reused."""
    stamp = []
    for path in paths:
        for file in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if file.is_file():
                info = file.stat()
                stamp.append((str(file), info.st_size, info.st_mtime_ns))
    return stamp


def resume_key(params: dict, model_dir: str, items: list[dict]) -> str:
    """Everything that decides a job's records: a resume file with another key is not reused
    (a changed config, a retrained model, or other questions under the same shard)."""
    return fingerprint(params, input_stamp(model_dir), items)


def run_generation(
    items: list[dict],
    make_task: Callable[[dict], Task],
    model_dir: str,
    params: dict,
    out_path: str,
    resume_path: str,
    desc: str,
    threads: int,
) -> LoopStats:
    """Generate for every item (resumable by chunks) and write the tasks' records in item order."""
    from scdpo.modeling import set_threads

    set_threads(threads)
    generation = params["generation"]
    key = resume_key(params, model_dir, items)
    with sandbox_pool(params["sandbox"], workers=max(1, threads)) as pool:
        records, stats = run_resumable(
            items,
            make_tasks=lambda chunk: [make_task(item) for item in chunk],
            records_of=lambda tasks: [task.record() for task in tasks],
            backend_factory=lambda: make_backend(generation["backend"], model_dir),
            executor=pool,
            settings=loop_settings(generation, params["seed"]),
            resume_path=resume_path,
            key=key,
            chunk_size=generation["chunk_size"],
            desc=desc,
        )
    write_jsonl(out_path, records)
    if os.path.exists(resume_path):
        os.remove(resume_path)
    return stats


@dataclass(frozen=True)
class Stage:
    """What a generation job does: a task per item, and a line saying what the records hold."""

    desc: str  # the progress bar's label
    items: list[dict]
    make_task: Callable[[dict], Task]
    summarize: Callable[[list[dict]], str]


def run_stage(
    stage: Stage, model_dir: str, params: dict, out_path: str, resume_path: str, threads: int
) -> None:
    """One workflow job of a generation stage: generate, write the records, log their summary."""
    stats = run_generation(
        stage.items,
        stage.make_task,
        model_dir,
        params,
        out_path,
        resume_path,
        stage.desc,
        threads,
    )
    log.info("%s; %s", stage.summarize(list(read_jsonl(out_path))), describe(stats))


def merge_shards(shard_paths: list[str], out_path: str) -> None:
    """Concatenate shard files in shard order (shards are contiguous slices of the items)."""
    write_jsonl(out_path, (record for path in shard_paths for record in read_jsonl(path)))
