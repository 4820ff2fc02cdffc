"""Pool of pre-started sandboxed workers, and the simple `run_blocks` front end."""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import logging
import os
import queue
import selectors
import shutil
import subprocess
import tempfile
import threading
import time

from . import _cells
from ._cgroup import WorkerCgroups
from ._launch import (
    BLOCK_MARGIN,
    CGROUP_MARGIN_MB,
    DEFAULT_CONFIG,
    SANDBOX_ENV,
    STARTUP_MEMORY_MB,
    STARTUP_TIMEOUT,
    SandboxConfig,
    SandboxError,
    _make_launch,
    _matplotlib_cache,
    _seed_of,
    _WorkerDied,
    sanitize,
)

log = logging.getLogger("scdpo.sandbox")


# ---------------------------------------------------------------- one worker process


class _WorkerProcess:
    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
            bufsize=0,
            start_new_session=True,
        )
        self._buf = bytearray()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ)
        try:
            reply = self._read(time.monotonic() + STARTUP_TIMEOUT)
            if not (isinstance(reply, dict) and isinstance(reply.get("ready"), dict)):
                raise _WorkerDied("worker sent no ready signal")
            self.features: dict = reply["ready"]
        except _WorkerDied as exc:
            self.kill()
            detail = self.stderr_tail()
            self._stderr.close()
            raise SandboxError(
                f"sandbox worker failed to start: {exc}; stderr: {detail!r}"
            ) from exc

    def run(self, blocks: list[str], seed: int, config: SandboxConfig) -> list[str]:
        """Each block's output, waiting at most its timeout plus a margin for each."""
        try:
            body = json.dumps({"blocks": blocks, "seed": seed}).encode()
            self.proc.stdin.write(_cells.HEADER.pack(len(body)) + body)
        except OSError as exc:
            raise _WorkerDied(f"cannot send to worker: {exc}") from exc
        outputs = []
        for _ in blocks:
            output = self._read(time.monotonic() + config.timeout + BLOCK_MARGIN)
            if not isinstance(output, str):
                raise _WorkerDied(f"malformed reply from worker: {str(output)[:200]!r}")
            outputs.append(sanitize(bound(output, config.max_output_chars)))
        return outputs

    def _read(self, deadline: float):
        """The next frame, from what is buffered or read by then (one read often holds all
        of a solution's frames, which arrive together when its blocks are quick)."""
        while True:
            if len(self._buf) >= _cells.HEADER.size:
                (size,) = _cells.HEADER.unpack_from(self._buf)
                if size > _cells.MAX_FRAME:
                    raise _WorkerDied(f"oversized frame ({size} bytes)")
                end = _cells.HEADER.size + size
                if len(self._buf) >= end:
                    body = bytes(self._buf[_cells.HEADER.size : end])
                    del self._buf[:end]
                    try:
                        return json.loads(body)
                    except (ValueError, RecursionError) as exc:
                        raise _WorkerDied(f"garbled reply: {exc}") from exc
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise _WorkerDied("worker did not answer in time")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise _WorkerDied("worker exited")
            self._buf += chunk

    def close(self) -> None:
        self.kill()
        self._stderr.close()

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(self._stderr.tell() - 2000, 0))
        return self._stderr.read().decode(errors="replace")

    def kill(self) -> None:
        self._sel.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


# ---------------------------------------------------------------- the pool


_Task = tuple[list[str], int, concurrent.futures.Future]


def bound(output: str, limit: int) -> str:
    """The worker bounds every output it builds; this only backs it up, should it ever not."""
    most = limit + limit // 2 + 100  # head, truncation note, error line
    if len(output) <= most:
        return output
    return output[:limit] + f"\n... [output truncated: {len(output) - limit} more characters]"


class _Slot:
    """A started worker and the cgroups that hold it."""

    def __init__(self, process: _WorkerProcess, cgroups: WorkerCgroups | None) -> None:
        self.process, self.cgroups = process, cgroups

    def close(self) -> None:
        self.process.close()
        if self.cgroups is not None:
            self.cgroups.remove()


class SandboxPool:
    """Pre-started sandboxed workers; each runs one solution at a time in a forked child."""

    def __init__(self, workers: int = 2, config: SandboxConfig = DEFAULT_CONFIG) -> None:
        if workers < 1:
            raise ValueError("SandboxPool needs at least one worker")
        self.config = config
        self._launch = _make_launch(config)
        self._mpl_cache = _matplotlib_cache(self._launch.bwrap, self._launch.privileged)
        log.info(
            "sandbox pool: %d workers, %s, %s",
            workers,
            "bwrap" if self._launch.sandboxed else "UNSANDBOXED",
            config,
        )
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._starting = threading.Semaphore(0)  # released once per slot's first start
        self._threads = [
            threading.Thread(target=self._serve, args=(slot,), daemon=True, name=f"sandbox-{slot}")
            for slot in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, blocks: list[str], seed: int | str | None = None
    ) -> concurrent.futures.Future[list[str]]:
        """Run one solution's blocks; `seed` keys its random numbers (default: its first block,
        so a replay of the same solution, with more blocks, sees the same values)."""
        future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("SandboxPool is closed")
            self._tasks.put((list(blocks), _seed_of(list(blocks), seed), future))
        return future

    def run(self, blocks: list[str], seed: int | str | None = None) -> list[str]:
        return self.submit(blocks, seed).result()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until every worker has tried its first start (for benchmarks and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self._threads:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not self._starting.acquire(timeout=left):
                return False
        for _ in self._threads:
            self._starting.release()
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._tasks.put(None)
        for thread in self._threads:
            thread.join()
        self._launch.close()  # the pool's uids are free once its workers are gone
        if not self._launch.sandboxed:  # the unsandboxed mode's private working directory
            shutil.rmtree(self._launch.cwd, ignore_errors=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, slot: int) -> _Slot:
        # Called only from the slot's own thread, which outlives its worker: bwrap's
        # --die-with-parent fires when the *thread* that started it exits.
        cgroups = WorkerCgroups.create(
            f"w{slot}", self.config.memory_mb + STARTUP_MEMORY_MB, self.config.max_processes + 16
        )
        if slot == 0 and (cgroups is None or cgroups.missing):
            missing = "all" if cgroups is None else ", ".join(cgroups.missing)
            log.warning("sandbox workers run without cgroup limits for %s (see docs)", missing)
        argv = self._launch.argv(slot, cgroups, self._mpl_cache)
        env = {} if self._launch.sandboxed else dict(SANDBOX_ENV)
        try:
            worker = _WorkerProcess(argv, self._launch.cwd, env)
            memory = cgroups.memory if cgroups is not None else None
            if memory is not None:
                # The worker's own image, what one solution may use (the worker stops it there)
                # and a margin, so the kernel's limit is the backstop between two checks.
                margin = (self.config.memory_mb + CGROUP_MARGIN_MB) << 20
                memory.set_limit(memory.usage() + margin)
        except BaseException:
            if cgroups is not None:
                cgroups.remove()
            raise
        missing = [k for k, on in worker.features.items() if not on]
        if missing and slot == 0:
            log.warning("sandbox worker runs without %s (not allowed here)", ", ".join(missing))
        return _Slot(worker, cgroups)

    def _serve(self, slot: int) -> None:
        worker: _Slot | None = None
        try:
            worker = self._start(slot)
        except (SandboxError, OSError) as exc:
            log.error("%s", exc)
        finally:
            self._starting.release()
        while (task := self._tasks.get()) is not None:
            blocks, seed, future = task
            if future.set_running_or_notify_cancel():
                worker = self._run_task(slot, worker, blocks, seed, future)
        if worker is not None:
            worker.close()

    def _run_task(
        self,
        slot: int,
        worker: _Slot | None,
        blocks: list[str],
        seed: int,
        future: concurrent.futures.Future,
    ) -> _Slot | None:
        """Run on this slot's worker, replacing a dead or stalled worker and retrying once.

        Always settles the future: a caller in the generation loop must never hang.
        """
        for attempt in range(2):
            try:
                worker = worker or self._start(slot)
                outputs = worker.process.run(blocks, seed, self.config) if blocks else []
                future.set_result(outputs)
                return worker
            except _WorkerDied as exc:
                log.warning(
                    "sandbox worker %d died (%s; stderr %r); %s",
                    slot,
                    exc,
                    worker.process.stderr_tail() if worker else "",
                    "giving up on this solution" if attempt else "retrying on a new worker",
                )
                if worker is not None:
                    worker.close()
                worker = None
                if attempt:
                    future.set_result([f"RuntimeError: the sandbox failed: {exc}"] * len(blocks))
            except Exception as exc:  # noqa: BLE001 - e.g. SandboxError: the worker cannot start
                future.set_exception(exc)
                if worker is not None:
                    worker.close()
                return None
        return None


# ---------------------------------------------------------------- simple front end

_shared: dict[float, SandboxPool] = {}
_shared_lock = threading.Lock()


def _close_shared() -> None:
    with _shared_lock:
        for pool in _shared.values():
            pool.close()
        _shared.clear()


def run_blocks(blocks: list[str], timeout: float = 6.0, seed: int | str | None = None) -> list[str]:
    """One solution's code blocks in (they share state like notebook cells), their outputs out.

    Uses a lazily started shared pool per timeout value, closed at interpreter exit.
    """
    with _shared_lock:
        pool = _shared.get(timeout)
        if pool is None:
            if not _shared:
                atexit.register(_close_shared)
            pool = _shared[timeout] = SandboxPool(config=SandboxConfig(timeout=timeout))
    return pool.run(blocks, seed)
