"""Shards, chunks and resume around the frontier loop.

A shard's questions are processed in fixed chunks; each finished chunk is appended (fsync'd) to a
resume file outside Snakemake's declared outputs, so a job killed at any point and re-run continues
after its last whole chunk. Chunk composition and seeds depend only on the data and the config, so
the resumed result equals an uninterrupted run record for record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from scdpo.generation.backends import Backend
from scdpo.generation.loop import (
    Executor,
    LoopSettings,
    LoopStats,
    Task,
    progress_bar,
    run_frontier,
)
from scdpo.jsonl import append_jsonl

log = logging.getLogger(__name__)


def shard_slice(items: list, shard: int, shards: int) -> list:
    """Contiguous shard `shard` of `shards`: concatenating all shards restores the order."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    size, extra = divmod(len(items), shards)
    start = shard * size + min(shard, extra)
    return items[start : start + size + (shard < extra)]


def fingerprint(*parts: object) -> str:
    """What a resume file was made with; a different config starts afresh."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_resume(path: Path, key: str) -> dict[int, list[dict]]:
    """Finished chunks from an earlier try. A torn last line (killed mid-write) is cut off the
    file, so that the chunks this try appends after it are read by the next one."""
    done: dict[int, list[dict]] = {}
    if not path.exists():
        return done
    whole = 0  # bytes of whole lines
    with path.open("rb") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not line.endswith(b"\n"):
                break
            if entry.get("fingerprint") != key:
                log.info("resume file %s was made with another config: starting afresh", path)
                return {}
            done[entry["chunk"]] = entry["records"]
            whole += len(line)
    if whole < path.stat().st_size:
        log.info("resume file %s: cutting a torn line after %d whole chunks", path, len(done))
        os.truncate(path, whole)
    return done


def run_resumable(
    items: list[dict],
    make_tasks: Callable[[list[dict]], list[Task]],
    records_of: Callable[[list[Task]], list[dict]],
    backend_factory: Callable[[], Backend],
    executor: Executor,
    settings: LoopSettings,
    resume_path: str | Path,
    key: str,
    chunk_size: int,
    desc: str,
) -> tuple[list[dict], LoopStats]:
    """All items' records in input order; work already in `resume_path` is not redone."""
    resume_path = Path(resume_path)
    resume_path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_resume(resume_path, key)
    if not done and resume_path.exists():
        os.remove(resume_path)
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    if done:
        log.info("resuming: %d of %d chunks already done (%s)", len(done), len(chunks), resume_path)
    total = LoopStats()
    backend = None
    # Progress counts questions (done when their task is), so the ETA holds however many samples
    # adaptive sampling draws.
    bar = progress_bar(len(items), desc)
    bar.update(sum(len(chunks[i]) for i in done if i < len(chunks)))
    for index, chunk in enumerate(chunks):
        if index in done:
            continue
        backend = backend or backend_factory()
        tasks = make_tasks(chunk)
        stats = run_frontier(tasks, backend, executor, settings, progress=bar.update)
        done[index] = records_of(tasks)
        append_jsonl(resume_path, [{"fingerprint": key, "chunk": index, "records": done[index]}])
        add_stats(total, stats)
        log.info("chunk %d/%d: %s", index + 1, len(chunks), describe(stats))
    bar.close()
    if total.rounds:
        log.info("generated this run: %s", describe(total))
    return [record for index in range(len(chunks)) for record in done[index]], total


def describe(stats: LoopStats) -> str:
    """One log line of throughput figures."""
    line = (
        f"{stats.solutions} solutions, {stats.model_calls} block calls, {stats.code_blocks} code "
        f"runs, {stats.tokens} tokens in {stats.model_seconds:.1f}s of model time "
        f"({stats.tokens_per_second():.0f} tokens/s)"
    )
    prompt = stats.prompt_tokens_computed + stats.prompt_tokens_reused
    if prompt:
        line += f", prompt tokens {100 * stats.prompt_tokens_reused / prompt:.0f}% from cache"
    return line


def add_stats(total: LoopStats, stats: LoopStats) -> None:
    """Add `stats` into `total`, field by field."""
    for name in vars(total):
        setattr(total, name, getattr(total, name) + getattr(stats, name))
