"""Verdicts under a hard wall-clock limit, in child processes that are killed on overrun.

math-verify's own timeout uses SIGALRM, which only works in the main thread, and sympy can run
without end (`9^{9^{9^{9}}}`). So a verdict the fast path cannot decide runs, whole (normalisation,
comparison and math-verify: `compare.decide`), in a child process that is killed when it exceeds
its limit; the verdict counts as not equal, is logged with its item id and counted in `stats`.

Importing sympy and warming math-verify takes 2-4 s, so no child starts cold: one zygote process
(`scdpo.grading._worker`) does it once, and every child is forked from it, ready in milliseconds.
A killed child's replacement is forked at once, so a timed-out verdict costs its limit and
nothing more. Pools persist across calls.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("scdpo.grading")

_SRC_DIR = str(Path(__file__).resolve().parents[2])
_STARTUP_LIMIT = 120.0  # importing sympy on a loaded machine; not part of any verdict's limit
Job = tuple[str, str]  # (extracted answer, reference)


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


class _Lines:
    """Newline-terminated replies read from a socket as they arrive."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_available(self) -> str | None:
        """One line if complete after reading what is available now, else None."""
        chunk = self.sock.recv(4096)
        if not chunk:
            raise EOFError("grading process exited")
        self._buffer += chunk
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


class _Zygote(_Lines):
    """The process that imports and warms math-verify once and forks every verdict child."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SRC_DIR, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scdpo.grading._worker"], stdin=theirs, env=env
        )
        theirs.close()
        super().__init__(ours)
        self.spawned = time.monotonic()
        self.ready = False

    def fork(self) -> _Child:
        """A child serving verdicts on a new socket pair (the zygote must be ready)."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.sock, [b"f"], [theirs.fileno()])
        finally:
            theirs.close()
        reply = b""
        self.sock.settimeout(_STARTUP_LIMIT)
        try:
            while not reply.endswith(b"\n"):  # nothing else is in flight: the pool holds its lock
                chunk = self.sock.recv(64)
                if not chunk:
                    raise EOFError("the grading zygote exited")
                reply += chunk
        except BaseException:
            ours.close()
            raise
        finally:
            self.sock.settimeout(None)
        return _Child(ours, int(reply))

    def close(self) -> None:
        """The zygote exits on EOF once warm (its children die with it: PDEATHSIG)."""
        self.sock.close()
        if not self.ready:
            self.proc.kill()
        self.proc.wait()


class _Child(_Lines):
    """One verdict child: a JSON line `[answer, reference]` in, `1`/`0` out."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        super().__init__(sock)
        self.pid = pid
        self.started: float | None = None  # when the current job was sent

    def send(self, job: Job) -> None:
        self.started = time.monotonic()
        self.sock.sendall((json.dumps(job) + "\n").encode())

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)  # the zygote reaps it
        except ProcessLookupError:
            pass
        self.sock.close()


class SymbolicPool:
    """`processes` children that return verdicts in input order, each under `timeout` seconds.

    The limit of a job runs from when it is sent. The zygote starts on the first job that needs
    it (or `warm()`), in the background; jobs wait for it, not counting against their limits.
    """

    def __init__(self, processes: int = 1) -> None:
        self.size = max(1, processes)
        self.zygote: _Zygote | None = None
        self.workers: list[_Child] = []
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
        """Start the zygote and the children now, and wait until they are ready."""
        with self.batch(_STARTUP_LIMIT) as batch:
            self._fill()
            while not self.workers:
                batch._collect(wait=None)

    def _fill(self) -> None:
        """Fork children up to the pool's size; start the zygote first if there is none."""
        if self.zygote is None:
            self.zygote = _Zygote()
        if not self.zygote.ready:
            return
        while len(self.workers) < self.size:
            try:
                self.workers.append(self.zygote.fork())
            except (OSError, EOFError):  # the zygote died (killed, out of memory): a cold start
                logger.warning("grading zygote exited; starting a new one")
                self._restart()
                self.zygote = _Zygote()
                return

    def _discard(self, worker: _Child) -> None:
        """Kill a child and fork its replacement at once."""
        worker.kill()
        self.workers.remove(worker)
        self._fill()

    def _restart(self) -> None:
        """The zygote died or hung: every child goes with it; the next job starts a new one."""
        if self.zygote is not None:
            self.zygote.proc.kill()
        self.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None


class Batch:
    """Verdicts of one call: `submit` sends jobs to idle children at once, `finish` waits."""

    def __init__(self, pool: SymbolicPool, timeout: float) -> None:
        self.pool, self.timeout = pool, timeout
        self.jobs: list[Job] = []
        self.ids: list[Hashable] = []
        self.results: list[bool] = []
        self.queue: deque[int] = deque()
        self.busy: dict[_Child, int] = {}

    def submit(self, job: Job, item_id: Hashable) -> None:
        self.pool._fill()  # the zygote starts on the first job that needs it
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
        for worker in [w for w in self.pool.workers if w not in self.busy]:
            if not self.queue:
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
        """Wait (at most `wait` s) for a reply, the zygote's start-up or a deadline."""
        now = time.monotonic()
        zygote = self.pool.zygote
        starting = zygote is not None and not zygote.ready
        deadlines = [(w.started or now) + self.timeout for w in self.busy]
        if starting:
            deadlines.append(zygote.spawned + _STARTUP_LIMIT)
        if not deadlines:
            return
        limit = max(0.0, min(deadlines) - now)
        waiting = [*self.busy, *([zygote] if starting else [])]
        for ready in select.select(waiting, [], [], limit if wait is None else wait)[0]:
            if ready is zygote:
                self._read_zygote()
            else:
                self._read(ready)
        now = time.monotonic()
        for worker in [w for w in self.busy if now - (w.started or now) >= self.timeout]:
            index = self.busy.pop(worker)
            stats.record(self.ids[index], *self.jobs[index], self.timeout)
            self.pool._discard(worker)
        zygote = self.pool.zygote
        if zygote is not None and not zygote.ready and now - zygote.spawned > _STARTUP_LIMIT:
            self.pool._restart()
            raise RuntimeError("grading zygote did not start in time")

    def _read_zygote(self) -> None:
        zygote = self.pool.zygote
        try:
            line = zygote.read_available()
        except EOFError:
            self.pool._restart()
            raise RuntimeError("grading zygote failed to start") from None
        if line == "ready":
            zygote.ready = True
            self.pool._fill()

    def _read(self, worker: _Child) -> None:
        try:
            line = worker.read_available()
        except (EOFError, OSError):  # the child died (out of memory, killed): not equal
            logger.warning("grading worker exited; verdict counted as not equal")
            self.results[self.busy.pop(worker)] = False
            self.pool._discard(worker)
            return
        if line is not None:
            self.results[self.busy.pop(worker)] = line == "1"


_pools: dict[int, SymbolicPool] = {}
_pools_lock = threading.Lock()


def pool(processes: int = 1) -> SymbolicPool:
    """The process's persistent pool of `processes` children (started on first use)."""
    with _pools_lock:
        if processes not in _pools:
            _pools[processes] = SymbolicPool(processes)
        return _pools[processes]


def close_pools() -> None:
    """Stop every child and zygote (at exit; a later verdict starts them again)."""
    with _pools_lock:
        for each in _pools.values():
            each.close()


atexit.register(close_pools)


def _reset_after_fork() -> None:
    """A forked copy must not talk to (or wait on the locks of) its parent's processes; it closes
    its copies of their sockets, so that the parent's exit still ends them."""
    global _pools_lock
    _pools_lock = threading.Lock()
    for each in _pools.values():
        for channel in [each.zygote, *each.workers]:
            if channel is not None:
                channel.sock.close()
        each.zygote, each.workers = None, []
        each.lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def verify_with_limit(
    answer: str, reference: str, timeout: float, item_id: Hashable = None
) -> bool:
    """One whole verdict on the shared one-child pool; serialised across threads."""
    return pool(1).run([(answer, reference)], timeout, [item_id])[0]
