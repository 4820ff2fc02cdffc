"""Symbolic equivalence with math-verify, under a hard time limit enforced from any thread.

math-verify's own timeout uses SIGALRM, which only works in the main thread, and sympy can run
without end (`9^{9^{9^{9}}}`). So verdicts run in child processes that are killed when a verdict
exceeds its limit; the killed child is replaced and the verdict counts as not equal.
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
    """math-verify on normalised answers, without any time limit (callers provide one)."""
    from math_verify import verify

    try:
        return bool(verify(_parse(gold), _parse(pred), timeout_seconds=None))
    except Exception:  # noqa: BLE001 - a verdict must never raise
        logger.debug("math-verify raised on %r vs %r", gold, pred, exc_info=True)
        return False


class _Worker:
    """One child process running `scdpo.grading._worker`."""

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
        self.started: float | None = None
        if self.read_line(time.monotonic() + _STARTUP_LIMIT) != "ready":
            self.kill()
            raise RuntimeError("grading worker failed to start")

    def send(self, gold: str, pred: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps([gold, pred]) + "\n").encode())
        self.proc.stdin.flush()
        self.started = time.monotonic()

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

    def read_line(self, deadline: float) -> str | None:
        while (remaining := deadline - time.monotonic()) > 0:
            if select.select([self], [], [], remaining)[0]:
                line = self.read_available()
                if line is not None:
                    return line
        return None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _log_timeout(gold: str, pred: str, limit: float) -> None:
    logger.warning("verdict over %.1f s counted as not equal: %.80r vs %.80r", limit, pred, gold)


class SymbolicPool:
    """Worker processes that return verdicts in input order, each under `timeout` seconds."""

    def __init__(self, processes: int = 1) -> None:
        self.size = max(1, processes)
        self.workers: list[_Worker] = []

    def run(self, jobs: list[tuple[str, str]], timeout: float) -> list[bool]:
        results = [False] * len(jobs)
        queue = list(enumerate(jobs))[::-1]
        busy: dict[_Worker, int] = {}
        while queue or busy:
            for worker in self._idle(busy):
                if not queue:
                    break
                index, job = queue.pop()
                try:
                    worker.send(*job)
                except OSError:  # the child died while idle: replace it, keep the job
                    queue.append((index, job))
                    self._discard(worker)
                    continue
                busy[worker] = index
            self._collect(busy, jobs, results, timeout)
        return results

    def _idle(self, busy: dict[_Worker, int]) -> list[_Worker]:
        """Workers free for a job, started here (lazily, so a kill never delays a verdict)."""
        while len(self.workers) < self.size:
            self.workers.append(_Worker())
        return [w for w in self.workers if w not in busy]

    def _collect(
        self,
        busy: dict[_Worker, int],
        jobs: list[tuple[str, str]],
        results: list[bool],
        timeout: float,
    ) -> None:
        """Wait for the first reply or the earliest deadline; handle replies and overruns."""
        deadline = min(w.started or 0.0 for w in busy) + timeout
        ready = select.select(list(busy), [], [], max(0.0, deadline - time.monotonic()))[0]
        for worker in ready:
            try:
                line = worker.read_available()
            except EOFError:  # the child died (out of memory, killed): count as not equal
                logger.warning("grading worker exited; verdict counted as not equal")
                results[busy.pop(worker)] = False
                self._discard(worker)
                continue
            if line is not None:
                results[busy.pop(worker)] = line == "1"
        now = time.monotonic()
        for worker in [w for w in busy if now - (w.started or now) >= timeout]:
            _log_timeout(*jobs[busy.pop(worker)], timeout)
            self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []


_shared_pool = SymbolicPool(1)
_shared_lock = threading.Lock()
atexit.register(_shared_pool.close)


def _reset_after_fork() -> None:
    """A forked copy must not talk to (or wait on the lock of) its parent's worker."""
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared_pool.workers = []


os.register_at_fork(after_in_child=_reset_after_fork)


def verify_with_limit(gold: str, pred: str, timeout: float) -> bool:
    """One verdict on the shared worker; serialised across threads."""
    with _shared_lock:
        return _shared_pool.run([(gold, pred)], timeout)[0]
