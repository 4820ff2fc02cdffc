"""Pool of pre-started sandboxed workers, and the simple `run_blocks` front end."""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import json
import logging
import os
import queue
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import _worker

log = logging.getLogger("scdpo.sandbox")

WORKER_SOURCE = Path(_worker.__file__).read_text()
PREIMPORT = [
    "math",
    "cmath",
    "fractions",
    "decimal",
    "itertools",
    "numpy",
    "sympy",
    "IPython.lib.pretty",
]
TMPFS_MB = 64  # size of the private /tmp; also the largest file the code may write
STARTUP_TIMEOUT = 120.0  # seconds for a worker to import numpy/sympy on a loaded machine
UID_BASE = 2_000_000_000  # children run as UID_BASE + ..., uids no real account uses
SANDBOX_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    # One BLAS thread: threads would multiply CPU use and virtual memory per child.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class SandboxError(RuntimeError):
    """The sandbox could not be started or used."""


class _WorkerDied(SandboxError):
    """A worker stopped answering; the pool replaces it."""


@dataclass(frozen=True)
class SandboxConfig:
    timeout: float = 6.0  # seconds per block
    max_output_chars: int = 2000  # longer output keeps its head and is marked as truncated
    memory_mb: int = 2048  # address-space limit of the solution process
    max_processes: int = 64  # process-count limit inside the sandbox
    allow_unsandboxed: bool = False  # without bwrap: refuse unless True, then warn loudly

    def __post_init__(self) -> None:
        if min(self.timeout, self.max_output_chars, self.memory_mb, self.max_processes) <= 0:
            raise ValueError(f"SandboxConfig values must be positive: {self}")


# ---------------------------------------------------------------- how a worker is started


def find_bwrap() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None
    )


def _python_roots() -> list[str]:
    """The venv and the Python installation it points to: all the sandbox may read of ours."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(roots)


def _system_mounts() -> list[str]:
    """The C libraries Python and numpy link against; merged-/usr symlinks stay symlinks."""
    args: list[str] = []
    for path in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


@functools.cache
def _supports(bwrap: str, option: str) -> bool:
    """Whether this bwrap knows an option (--size came with bubblewrap 0.7)."""
    usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, env={}).stdout
    if option not in usage:
        log.warning("%s lacks %s: the sandbox's /tmp is not size-limited", bwrap, option)
    return option in usage


def _parents(paths: list[str]) -> list[str]:
    found = {str(p) for path in paths for p in Path(path).parents if str(p) != "/"}
    return sorted(found, key=lambda p: (p.count("/"), p))


def _bwrap_argv(bwrap: str, privileged: bool) -> list[str]:
    if privileged:
        # Not --unshare-all: a user namespace would map the sandbox's root to the real root,
        # whom the kernel exempts from RLIMIT_NPROC. Instead the worker keeps just the
        # capabilities to drop its children to an unused uid (and to kill them).
        ns = (
            "--unshare-ipc --unshare-pid --unshare-net --unshare-uts --unshare-cgroup-try"
            " --cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_KILL"
        ).split()
    else:
        ns = ["--unshare-all"]  # unprivileged bwrap keeps no capabilities anyway
    argv = [bwrap, *ns, "--die-with-parent", "--as-pid-1", "--new-session"]
    # The empty /tmp first: a venv under /tmp (a checkout there) is bound on top of it below.
    size = ["--size", str(TMPFS_MB << 20)] if _supports(bwrap, "--size") else []
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", *size, "--tmpfs", "/tmp"]
    roots = _python_roots()
    mounts = _system_mounts()
    for parent in _parents([*roots, *mounts[2::3]]):  # mounts are (option, source, target)
        if parent != "/tmp":
            argv += ["--perms", "0755", "--dir", parent]  # bwrap would make them 0700
    argv += mounts
    for root in roots:
        argv += ["--ro-bind", root, root]
    argv += "--remount-ro / --remount-ro /dev --chdir /tmp --clearenv".split()
    for key, value in SANDBOX_ENV.items():
        argv += ["--setenv", key, value]
    return argv + ["--"]


@dataclass(frozen=True)
class _Launch:
    """Everything needed to (re)start the worker of one pool slot."""

    prefix: list[str]  # bwrap ... -- (empty when unsandboxed)
    settings: dict
    cwd: str

    def argv(self, slot: int) -> list[str]:
        settings = dict(self.settings)
        if settings["uid"] is not None:
            settings["uid"] += slot % 64
        return [*self.prefix, sys.executable, "-I", "-B", "-c", WORKER_SOURCE, json.dumps(settings)]


def _make_launch(config: SandboxConfig) -> _Launch:
    settings = {**asdict(config), "fsize_mb": TMPFS_MB, "preimport": PREIMPORT}
    del settings["allow_unsandboxed"]
    bwrap = find_bwrap()
    if bwrap is not None:
        privileged = os.geteuid() == 0
        uid = UID_BASE + (os.getpid() % (1 << 20)) * 64 if privileged else None
        settings.update(uid=uid, pid1=True, workdir="/tmp")
        return _Launch(_bwrap_argv(bwrap, privileged), settings, "/")
    if not config.allow_unsandboxed:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed: refusing to run model-written "
            "code unsandboxed (install the `bubblewrap` package, or set "
            "SandboxConfig(allow_unsandboxed=True) at your own risk)"
        )
    workdir = tempfile.mkdtemp(prefix="scdpo-sandbox-")
    log.warning(
        "!!! bwrap not found: running model-written code UNSANDBOXED with your user's "
        "rights (only resource limits apply); workdir %s !!!",
        workdir,
    )
    settings.update(uid=None, pid1=False, workdir=workdir)
    return _Launch([], settings, workdir)


# ---------------------------------------------------------------- one worker process


class _WorkerProcess:
    def __init__(self, argv: list[str], cwd: str) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={},
            cwd=cwd,
            bufsize=0,
            start_new_session=True,
        )
        try:
            if self._read(time.monotonic() + STARTUP_TIMEOUT) != "ready":
                raise _WorkerDied("worker sent no ready signal")
        except (_WorkerDied, ValueError) as exc:
            self.kill()
            detail = self.stderr_tail()
            self._stderr.close()
            raise SandboxError(
                f"sandbox worker failed to start: {exc}; stderr: {detail!r}"
            ) from exc

    def run(self, blocks: list[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + len(blocks) * (timeout + 2) + 30
        try:
            body = json.dumps(blocks).encode()
            self.proc.stdin.write(_worker.HEADER.pack(len(body)) + body)
        except OSError as exc:
            raise _WorkerDied(f"cannot send to worker: {exc}") from exc
        try:
            outputs = self._read(deadline)
        except ValueError as exc:  # undecodable frame
            raise _WorkerDied(f"garbled reply: {exc}") from exc
        if not (isinstance(outputs, list) and len(outputs) == len(blocks)):
            raise _WorkerDied(f"malformed reply from worker: {str(outputs)[:200]!r}")
        return [str(o) for o in outputs]

    def _read(self, deadline: float):
        fd = self.proc.stdout.fileno()
        head = self._read_exact(fd, _worker.HEADER.size, deadline)
        (size,) = _worker.HEADER.unpack(head)
        if size > _worker.MAX_FRAME:
            raise _WorkerDied(f"oversized frame ({size} bytes)")
        return json.loads(self._read_exact(fd, size, deadline))

    @staticmethod
    def _read_exact(fd: int, n: int, deadline: float) -> bytes:
        buf = bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise _WorkerDied("worker did not answer in time")
                chunk = os.read(fd, n - len(buf))
                if not chunk:
                    raise _WorkerDied("worker exited")
                buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.kill()
        self._stderr.close()

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(self._stderr.tell() - 2000, 0))
        return self._stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


# ---------------------------------------------------------------- the pool


_Task = tuple[list[str], concurrent.futures.Future]


class SandboxPool:
    """Pre-started sandboxed workers; each runs one solution at a time in a forked child."""

    def __init__(self, workers: int = 2, config: SandboxConfig = SandboxConfig()) -> None:
        if workers < 1:
            raise ValueError("SandboxPool needs at least one worker")
        self.config = config
        self._launch = _make_launch(config)
        log.info(
            "sandbox pool: %d workers, %s, %s",
            workers,
            "bwrap" if self._launch.prefix else "UNSANDBOXED",
            config,
        )
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._serve, args=(slot,), daemon=True, name=f"sandbox-{slot}")
            for slot in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, blocks: list[str]) -> concurrent.futures.Future[list[str]]:
        future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("SandboxPool is closed")
            self._tasks.put((list(blocks), future))
        return future

    def run(self, blocks: list[str]) -> list[str]:
        return self.submit(blocks).result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._tasks.put(None)
        for thread in self._threads:
            thread.join()
        if not self._launch.prefix:  # the unsandboxed mode's private working directory
            shutil.rmtree(self._launch.cwd, ignore_errors=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, slot: int) -> _WorkerProcess:
        # Called only from the slot's own thread, which outlives its worker: bwrap's
        # --die-with-parent fires when the *thread* that started it exits.
        return _WorkerProcess(self._launch.argv(slot), self._launch.cwd)

    def _serve(self, slot: int) -> None:
        worker: _WorkerProcess | None = None
        try:
            worker = self._start(slot)
        except SandboxError as exc:
            log.error("%s", exc)
        while (task := self._tasks.get()) is not None:
            blocks, future = task
            if future.set_running_or_notify_cancel():
                worker = self._run_task(slot, worker, blocks, future)
        if worker is not None:
            worker.close()

    def _run_task(
        self,
        slot: int,
        worker: _WorkerProcess | None,
        blocks: list[str],
        future: concurrent.futures.Future,
    ) -> _WorkerProcess | None:
        """Run on this slot's worker, replacing a dead worker and retrying once.

        Always settles the future: a caller in the generation loop must never hang.
        """
        for attempt in range(2):
            try:
                worker = worker or self._start(slot)
                future.set_result(worker.run(blocks, self.config.timeout) if blocks else [])
                return worker
            except _WorkerDied as exc:
                log.warning(
                    "sandbox worker %d died (%s; stderr %r); starting a new one",
                    slot,
                    exc,
                    worker.stderr_tail() if worker else "",
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


def run_blocks(blocks: list[str], timeout: float = 6.0) -> list[str]:
    """One solution's code blocks in (they share state like notebook cells), their outputs out.

    Uses a lazily started shared pool per timeout value, closed at interpreter exit.
    """
    with _shared_lock:
        pool = _shared.get(timeout)
        if pool is None:
            if not _shared:
                atexit.register(_close_shared)
            pool = _shared[timeout] = SandboxPool(config=SandboxConfig(timeout=timeout))
    return pool.run(blocks)
