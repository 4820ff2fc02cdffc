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
from scdpo.generation.runner import add_stats, describe, fingerprint, run_resumable
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


@dataclass(frozen=True)
class Stage:
    """What a generation job does: a task per item, and a line saying what the records hold."""

    desc: str  # the progress bar's label
    items: list[dict]
    make_task: Callable[[dict], Task]
    summarize: Callable[[list[dict]], str]


@dataclass(frozen=True)
class Part:
    """One output file of a generation job: a stage's records under its own params."""

    stage: Stage
    params: dict
    out_path: str
    resume_path: str


class _OneEngine:
    """The job's engine, loaded on the first chunk that needs it and shared by every part."""

    def __init__(self, backend: dict, model_dir: str) -> None:
        self.backend, self.model_dir = backend, model_dir
        self.engine = None

    def __call__(self):
        if self.engine is None:
            self.engine = make_backend(self.backend, self.model_dir)
        return self.engine


def shared(parts: list[Part], *path: str) -> dict:
    """A config block every part of a job must share: the engine (`generation`, `backend`) and
    the sandbox pool (`sandbox`). Everything else may differ per part (a benchmark's tool-call
    limit, a pilot temperature)."""

    def block(part: Part) -> dict:
        value = part.params
        for key in path:
            value = value[key]
        return value

    first = block(parts[0])
    if any(block(part) != first for part in parts[1:]):
        raise ValueError(f"the parts of one generation job differ in {'.'.join(path)}")
    return first


def run_parts(
    parts: list[Part], model_dir: str, threads: int, keep_resume: bool = False
) -> LoopStats:
    """One workflow job: each part's records (resumable by chunks) written in item order, with
    one engine load and one sandbox pool for all of them (e.g. one model on every benchmark).

    With `keep_resume`, finished parts' resume files stay: a re-run of the job (a benchmark added
    to its list) takes the parts whose key is unchanged from there instead of generating them."""
    from scdpo.modeling import set_threads

    set_threads(threads)
    engine = _OneEngine(shared(parts, "generation", "backend"), model_dir)
    total = LoopStats()
    with sandbox_pool(shared(parts, "sandbox"), workers=max(1, threads)) as pool:
        for part in parts:
            generation = part.params["generation"]
            records, stats = run_resumable(
                part.stage.items,
                make_tasks=lambda chunk, stage=part.stage: [stage.make_task(i) for i in chunk],
                records_of=lambda tasks: [task.record() for task in tasks],
                backend_factory=engine,
                executor=pool,
                settings=loop_settings(generation, part.params["seed"]),
                resume_path=part.resume_path,
                key=resume_key(part.params, model_dir, part.stage.items),
                chunk_size=generation["chunk_size"],
                desc=part.stage.desc,
            )
            write_jsonl(part.out_path, records)
            log.info("%s: %s; %s", part.out_path, part.stage.summarize(records), describe(stats))
            add_stats(total, stats)
    if not keep_resume:
        for part in parts:
            if os.path.exists(part.resume_path):
                os.remove(part.resume_path)
    return total


def run_stage(
    stage: Stage, model_dir: str, params: dict, out_path: str, resume_path: str, threads: int
) -> LoopStats:
    """One workflow job of a generation stage with one output (a shard)."""
    return run_parts([Part(stage, params, out_path, resume_path)], model_dir, threads)


def merge_shards(shard_paths: list[str], out_path: str) -> None:
    """Concatenate shard files in shard order (shards are contiguous slices of the items)."""
    write_jsonl(out_path, (record for path in shard_paths for record in read_jsonl(path)))
