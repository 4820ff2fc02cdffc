"""The engine-agnostic generation loop: a frontier of live partial solutions.

Each round makes one batched backend call that extends every ready partial solution by one block.
Code blocks go to the sandbox pool and run while the model works on the next round; finished
solutions are retired and handed back to their task, which decides whether to start more (adaptive
sampling, step-controlled retries). Scheduling depends only on the data, never on timing, so a
fixed seed gives the same samples every run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from tqdm import tqdm

from scdpo.generation.backends import Backend, Request
from scdpo.solution import END_OF_MESSAGE, Block, parse_generated_block, render_blocks

log = logging.getLogger(__name__)


@dataclass
class Partial:
    """One solution being generated: a prompt, its blocks so far, and the task that owns it."""

    task: Task
    prompt: str
    blocks: list[Block]
    seed_key: str  # stable identity: seeds derive from it, never from batch position
    generated_from: int = 0  # blocks before this index are a given prefix, not generated here
    temperatures: list[float] = field(default_factory=list)
    calls: int = 0
    finished: bool = False  # ended with <|endofmessage|>
    truncated: bool = False  # ran out of calls, tokens or context
    tag: dict = field(default_factory=dict)

    def text(self) -> str:
        return self.prompt + render_blocks(self.blocks)

    def generated_blocks(self) -> list[Block]:
        return self.blocks[self.generated_from :]


class Task(Protocol):
    """A question-level controller: which partials to start, what to do with finished ones."""

    def start(self) -> list[Partial]: ...

    def temperature(self, partial: Partial) -> float: ...

    def retire(self, partial: Partial) -> list[Partial]: ...

    @property
    def done(self) -> bool: ...


@dataclass(frozen=True)
class LoopSettings:
    max_new_tokens: int = 512
    max_calls: int = 64
    max_prompt_tokens: int = 3072
    seed: int = 0


@dataclass
class LoopStats:
    rounds: int = 0
    model_calls: int = 0
    tokens: int = 0
    code_blocks: int = 0
    solutions: int = 0
    model_seconds: float = 0.0

    def tokens_per_second(self) -> float:
        return self.tokens / self.model_seconds if self.model_seconds else 0.0


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class Executor(Protocol):
    def submit(self, blocks: list[str]) -> Future[list[str]]: ...


def run_frontier(
    tasks: Iterable[Task],
    backend: Backend,
    executor: Executor,
    settings: LoopSettings,
    progress: Callable[[int], None] | None = None,
) -> LoopStats:
    """Drive every task to completion; returns throughput statistics."""
    stats = LoopStats()
    tasks = list(tasks)
    reset = getattr(backend, "reset", None)
    if reset is not None:
        reset()  # cached state from an earlier run must not shape this one's samples
    ready: list[Partial] = [p for task in tasks for p in task.start()]
    executing: list[tuple[Partial, Future[list[str]]]] = []
    while ready or executing:
        stats.rounds += 1
        batch, ready = ready, []
        if not batch:
            # Nothing else to overlap with: wait for the code that is running.
            ready += _collect_executions(executing, stats)
            executing = []
            continue
        finished_code = executing
        executing = []
        for partial in extend(batch, backend, settings, stats):
            if partial.finished or partial.truncated:
                stats.solutions += 1
                new = partial.task.retire(partial)
                ready += new
                if progress:
                    progress(1)
            elif partial.blocks[-1].kind == "code":
                executing.append((partial, execute(partial, executor)))
            else:
                ready.append(partial)
        # Code submitted a round ago ran while the model worked; it rejoins now.
        ready += _collect_executions(finished_code, stats)
    return stats


def execute(partial: Partial, executor: Executor) -> Future[list[str]]:
    """Run the solution's code blocks (all of them: a fresh process replays the earlier cells, so
    later blocks see their variables); the last output becomes the next execution block."""
    return executor.submit([b.content for b in partial.blocks if b.kind == "code"])


def _collect_executions(executing, stats: LoopStats) -> list[Partial]:
    rejoining = []
    for partial, future in executing:
        output = future.result()[-1]
        partial.blocks.append(Block("execution", output))
        stats.code_blocks += 1
        rejoining.append(partial)
    return rejoining


def extend(
    batch: list[Partial], backend: Backend, settings: LoopSettings, stats: LoopStats
) -> list[Partial]:
    """One model call for the whole batch; each partial gains one block (or is retired)."""
    live, requests = [], []
    for partial in batch:
        text = partial.text()
        if partial.calls >= settings.max_calls or (
            backend.count_tokens(text) > settings.max_prompt_tokens
        ):
            partial.truncated = True
            continue
        temperature = partial.task.temperature(partial)
        seed = derive_seed(settings.seed, partial.seed_key, partial.calls)
        live.append(partial)
        requests.append(Request(text, temperature, seed))
    started = time.perf_counter()
    completions = backend.generate(requests, settings.max_new_tokens) if requests else []
    stats.model_seconds += time.perf_counter() - started
    stats.model_calls += len(requests)
    for partial, request, completion in zip(live, requests, completions, strict=True):
        stats.tokens += completion.tokens
        partial.calls += 1
        partial.temperatures.append(request.temperature)
        partial.blocks.append(parse_generated_block(completion.text))
        if completion.stop == END_OF_MESSAGE:
            # The model may close the answer without a trailing block: drop an empty one.
            if not partial.blocks[-1].content.strip() and partial.blocks[-1].kind == "text":
                partial.blocks.pop()
                partial.temperatures.pop()
            partial.finished = True
        elif completion.stop is None:
            partial.truncated = True
    return batch


def progress_bar(total: int, desc: str) -> tqdm:
    """Progress with ETA on stderr (the rule's log)."""
    return tqdm(total=total, desc=desc, mininterval=5.0, smoothing=0.1)
