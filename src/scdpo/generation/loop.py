"""The engine-agnostic generation loop: a frontier of live partial solutions.

Every ready partial solution asks the engine for its next block; code blocks go to the sandbox
pool and run while the model works on other rows; finished solutions are retired and handed back
to their task, which decides whether to start more (adaptive sampling, step-controlled retries).

Two drivers, by what the engine offers:
- streaming (`add`/`step`, the transformers engine): one decoding step at a time; a row whose
  block ends is replaced at once, so no row waits for the slowest row of a round;
- rounds (`generate`, vLLM and test fakes): one batched call per round.

Scheduling depends only on the data and on step counts, never on timing (code submitted at step
s rejoins at step s + code_delay_steps, waiting for it then if need be), so a fixed seed gives the
same samples every run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from tqdm import tqdm

from scdpo.generation.backends import Backend, Completion, Request
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
    # Streaming engines: code submitted at engine step s rejoins at step s + code_delay_steps
    # (waiting for it then if it has not finished), so results never depend on timing.
    code_delay_steps: int = 8


@dataclass
class LoopStats:
    rounds: int = 0  # batched calls (round engines) or decoding steps (streaming engines)
    model_calls: int = 0  # requests: one block of one solution each
    tokens: int = 0  # generated tokens
    code_blocks: int = 0
    solutions: int = 0
    model_seconds: float = 0.0
    prompt_tokens_computed: int = 0  # prompt tokens the model encoded (streaming engines)
    prompt_tokens_reused: int = 0  # prompt tokens taken from the prefix cache (streaming engines)

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
    """Drive every task to completion; returns throughput statistics. `progress(1)` is called
    once per task, when it is done.

    A backend with `add`/`step` (a streaming engine, e.g. `TransformersBackend`) is driven one
    decoding step at a time: a solution whose block ends is handed back at once and its next
    request joins the running batch, so no row waits for the slowest row of a round. Any other
    backend gets one batched `generate` call per round.
    """
    tasks = list(tasks)
    reset = getattr(backend, "reset", None)
    if reset is not None:
        reset()  # cached state from an earlier run must not shape this one's samples
    if hasattr(backend, "step") and hasattr(backend, "add"):
        return _run_streaming(tasks, backend, executor, settings, progress)
    return _run_rounds(tasks, backend, executor, settings, progress)


def _run_rounds(tasks, backend, executor, settings, progress) -> LoopStats:
    stats, progress = LoopStats(), _Progress(progress)
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
                ready += progress.retire(partial, stats)
            elif partial.blocks[-1].kind == "code":
                executing.append((partial, execute(partial, executor)))
            else:
                ready.append(partial)
        # Code submitted a round ago ran while the model worked; it rejoins now.
        ready += _collect_executions(finished_code, stats)
    return stats


def _run_streaming(tasks, engine, executor, settings, progress) -> LoopStats:
    """One decoding step at a time; the order of everything depends on step counts only."""
    stats, progress = LoopStats(), _Progress(progress)
    ready: deque[Partial] = deque(p for task in tasks for p in task.start())
    in_flight: dict[int, tuple[Partial, Request]] = {}
    executing: deque[tuple[int, Partial, Future[list[str]]]] = deque()  # (due step, ...)
    step = key = 0
    while ready or in_flight or executing:
        while ready:
            partial = ready.popleft()
            request = _request(partial, engine, settings)
            if request is None:
                ready.extend(progress.retire(partial, stats))
                continue
            in_flight[key] = (partial, request)
            engine.add(key, request, settings.max_new_tokens)
            key += 1
        if in_flight:
            started = time.perf_counter()
            finished = engine.step()
            stats.model_seconds += time.perf_counter() - started
            stats.rounds += 1
            step += 1
            for done, completion in finished:
                partial, request = in_flight.pop(done)
                _apply(partial, request, completion, stats)
                if partial.finished or partial.truncated:
                    ready.extend(progress.retire(partial, stats))
                elif partial.blocks[-1].kind == "code":
                    due = step + settings.code_delay_steps
                    executing.append((due, partial, execute(partial, executor)))
                else:
                    ready.append(partial)
        elif executing:
            step = max(step, executing[0][0])  # nothing to decode: skip to the next code result
        while executing and executing[0][0] <= step:
            _, partial, future = executing.popleft()
            ready += _collect_executions([(partial, future)], stats)
    stats.prompt_tokens_computed = getattr(engine, "prefill_computed", 0)
    stats.prompt_tokens_reused = getattr(engine, "prefill_reused", 0)
    return stats


class _Progress:
    """`progress(1)` once per task, when it is done."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.reported = progress, set()

    def retire(self, partial: Partial, stats: LoopStats) -> list[Partial]:
        stats.solutions += 1
        task = partial.task
        new = task.retire(partial)
        if self.progress and task.done and id(task) not in self.reported:
            self.reported.add(id(task))
            self.progress(1)
        return new


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


def _request(partial: Partial, backend: Backend, settings: LoopSettings) -> Request | None:
    """The partial's next call, or None (and truncated) when it is out of calls or context."""
    text = partial.text()
    if partial.calls >= settings.max_calls or (
        backend.count_tokens(text) > settings.max_prompt_tokens
    ):
        partial.truncated = True
        return None
    temperature = partial.task.temperature(partial)
    seed = derive_seed(settings.seed, partial.seed_key, partial.calls)
    return Request(text, temperature, seed)


def _apply(partial: Partial, request: Request, completion: Completion, stats: LoopStats) -> None:
    """Append the new block; mark the partial finished or truncated."""
    stats.model_calls += 1
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


def extend(
    batch: list[Partial], backend: Backend, settings: LoopSettings, stats: LoopStats
) -> list[Partial]:
    """One model call for the whole batch; each partial gains one block (or is truncated)."""
    live, requests = [], []
    for partial in batch:
        request = _request(partial, backend, settings)
        if request is not None:
            live.append(partial)
            requests.append(request)
    started = time.perf_counter()
    completions = backend.generate(requests, settings.max_new_tokens) if requests else []
    stats.model_seconds += time.perf_counter() - started
    for partial, request, completion in zip(live, requests, completions, strict=True):
        _apply(partial, request, completion, stats)
    return batch


def progress_bar(total: int, desc: str) -> tqdm:
    """Progress with ETA on stderr (the rule's log)."""
    return tqdm(total=total, desc=desc, mininterval=5.0, smoothing=0.1)
