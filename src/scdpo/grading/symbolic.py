"""Verdicts under a hard wall-clock limit, in worker processes that are killed on overrun.

math-verify's own timeout uses SIGALRM, which only works in the main thread, and sympy can run
without end (`9^{9^{9^{9}}}`). So a verdict the fast path cannot decide runs, whole (normalisation,
comparison and math-verify: `compare.decide`), in a child process that is killed when it exceeds
its limit; the verdict counts as not equal, is logged with its item id and counted in `stats`,
and a replacement child starts at once in the background. Pools persist across calls.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger("scdpo.grading")

_SRC_DIR = str(Path(__file__).resolve().parents[2])
_STARTUP_LIMIT = 120.0  # importing sympy on a loaded machine; not part of any verdict's limit


class _NoTimeoutWarning(logging.Filter):
    """math-verify warns on every call that its timeout is off; here that is deliberate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader", "math_verify.utils"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())


def wrap(answer: str) -> str:
    """math-verify only parses a gold answer reliably when it is wrapped as LaTeX math."""
    return "$" + answer.replace("%", "\\%") + "$"


@lru_cache(maxsize=4096)
def _parse(answer: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    return parse(wrap(answer), extraction_config=config, parsing_timeout=None)


def verify_in_process(gold: str, pred: str) -> bool:
    """math-verify on two normalised answers, without any time limit (callers provide one).

    A relation and a set compare both ways (`x \\ge 2` is `[2, \\infty)`); math-verify's
    default allows it only for a set predicted against a relation.
    """
    from math_verify import verify

    try:
        gold_parsed, pred_parsed = _parse(gold), _parse(pred)
        return bool(
            verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=True)
        )
    except Exception:  # noqa: BLE001 - a verdict must never raise
        logger.debug("math-verify raised on %r vs %r", gold, pred, exc_info=True)
        return False


@dataclass
class Stats:
    """Verdicts that hit their time limit in this process (ids of the last 1,000)."""

    timeouts: int = 0
    timed_out: deque = field(default_factory=lambda: deque(maxlen=1000))

    def record(self, item_id: Hashable, answer: str, reference: str, limit: float) -> None:
        self.timeouts += 1
        self.timed_out.append(item_id)
        logger.warning(
            "item %s: verdict over %.1f s counted as not equal: %.80r vs %.80r",
            item_id,
            limit,
            answer,
            reference,
        )


stats = Stats()
Job = tuple[str, str]  # (extracted answer, reference)


class _Worker:
    """One child process running `scdpo.grading._worker`; started without waiting for it."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SRC_DIR, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scdpo.grading._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._buffer = b""
        self.spawned = time.monotonic()
        self.ready = False
        self.started: float | None = None  # when the current job was sent

    def send(self, job: Job) -> None:
        assert self.proc.stdin is not None
        self.started = time.monotonic()
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def read_available(self) -> str | None:
        """One reply line if complete after reading what is available now, else None."""
        chunk = os.read(self.fileno(), 4096)
        if not chunk:
            raise EOFError("grading worker exited")
        self._buffer += chunk
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class SymbolicPool:
    """Worker processes that return verdicts in input order, each under `timeout` seconds.

    `processes` verdicts run at once. A one-process pool keeps a second worker started and idle,
    so that a killed worker's place is taken at once; a larger pool goes on with its other
    workers. A worker's start (importing sympy, warming it: 2-4 s) happens in the background.
    The limit of a job runs from when it is sent.
    """

    def __init__(self, processes: int = 1) -> None:
        self.size = max(1, processes)
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()

    def run(self, jobs: list[Job], timeout: float, ids: list[Hashable] | None = None) -> list[bool]:
        with self.batch(timeout) as batch:
            for index, job in enumerate(jobs):
                batch.submit(job, ids[index] if ids is not None else index)
            return batch.finish()

    @contextmanager
    def batch(self, timeout: float) -> Iterator[Batch]:
        """Jobs submitted while the caller goes on (it holds the pool until the block ends)."""
        with self.lock:
            yield Batch(self, timeout)

    def warm(self) -> None:
        """Start the workers now and wait until they are ready (e.g. before a timed region)."""
        with self.batch(_STARTUP_LIMIT) as batch:
            self._fill()
            while not all(w.ready for w in self.workers):
                batch.finish()
                batch._collect(wait=None)

    def _fill(self) -> None:
        while len(self.workers) < self.size + (self.size == 1):  # + the spare
            self.workers.append(_Worker())

    def _discard(self, worker: _Worker, replace: bool = True) -> None:
        """Kill a worker and start its replacement now, so that it is ready by the next job."""
        worker.kill()
        self.workers.remove(worker)
        if replace:
            self._fill()

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []


class Batch:
    """Verdicts of one call: `submit` sends jobs to idle workers at once, `finish` waits."""

    def __init__(self, pool: SymbolicPool, timeout: float) -> None:
        self.pool, self.timeout = pool, timeout
        self.jobs: list[Job] = []
        self.ids: list[Hashable] = []
        self.results: list[bool] = []
        self.queue: deque[int] = deque()
        self.busy: dict[_Worker, int] = {}

    def submit(self, job: Job, item_id: Hashable) -> None:
        self.pool._fill()  # workers start on the first job that needs them
        self.queue.append(len(self.jobs))
        self.jobs.append(job)
        self.ids.append(item_id)
        self.results.append(False)
        self._step(wait=0.0)

    def finish(self) -> list[bool]:
        while self.queue or self.busy:
            self._step(wait=None)
        return self.results

    def _step(self, wait: float | None) -> None:
        self._dispatch()
        self._collect(wait)

    def _dispatch(self) -> None:
        for worker in [w for w in self.pool.workers if w.ready and w not in self.busy]:
            if not self.queue or len(self.busy) >= self.pool.size:
                return
            index = self.queue.popleft()
            try:
                worker.send(self.jobs[index])
            except OSError:  # the child died while idle: replace it, keep the job
                self.queue.appendleft(index)
                self.pool._discard(worker)
                continue
            self.busy[worker] = index

    def _collect(self, wait: float | None) -> None:
        """Wait (at most `wait` s) for a reply, a start-up or a deadline; handle what came."""
        now = time.monotonic()
        workers = self.pool.workers
        deadlines = [(w.started or now) + self.timeout for w in self.busy]
        deadlines += [w.spawned + _STARTUP_LIMIT for w in workers if not w.ready]
        if not deadlines:
            return
        limit = max(0.0, min(deadlines) - now)
        waiting = [w for w in workers if w in self.busy or not w.ready]
        for worker in select.select(waiting, [], [], limit if wait is None else wait)[0]:
            self._read(worker)
        now = time.monotonic()
        for worker in [w for w in self.busy if now - (w.started or now) >= self.timeout]:
            index = self.busy.pop(worker)
            stats.record(self.ids[index], *self.jobs[index], self.timeout)
            self.pool._discard(worker)
        for worker in [w for w in workers if not w.ready]:
            if now - worker.spawned > _STARTUP_LIMIT:
                self.pool._discard(worker, replace=False)
                raise RuntimeError("grading worker did not start in time")

    def _read(self, worker: _Worker) -> None:
        try:
            line = worker.read_available()
        except EOFError:  # the child died (out of memory, killed): count as not equal
            if worker not in self.busy:
                self.pool._discard(worker, replace=False)
                raise RuntimeError("grading worker failed to start") from None
            logger.warning("grading worker exited; verdict counted as not equal")
            self.results[self.busy.pop(worker)] = False
            self.pool._discard(worker)
            return
        if line == "ready":
            worker.ready = True
        elif line is not None:
            self.results[self.busy.pop(worker)] = line == "1"


_pools: dict[int, SymbolicPool] = {}
_pools_lock = threading.Lock()


def pool(processes: int = 1) -> SymbolicPool:
    """The process's persistent pool of `processes` workers (started on first use)."""
    with _pools_lock:
        if processes not in _pools:
            _pools[processes] = SymbolicPool(processes)
        return _pools[processes]


def close_pools() -> None:
    """Stop every worker (at exit; a later verdict starts them again)."""
    with _pools_lock:
        for each in _pools.values():
            each.close()


atexit.register(close_pools)


def _reset_after_fork() -> None:
    """A forked copy must not talk to (or wait on the locks of) its parent's workers."""
    global _pools_lock
    _pools_lock = threading.Lock()
    for each in _pools.values():
        each.workers = []
        each.lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def verify_with_limit(
    answer: str, reference: str, timeout: float, item_id: Hashable = None
) -> bool:
    """One whole verdict on the shared one-worker pool; serialised across threads."""
    return pool(1).run([(answer, reference)], timeout, [item_id])[0]
