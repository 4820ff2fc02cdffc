"""Pool of pre-started sandboxed workers, and the simple `run_blocks` front end."""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import hashlib
import importlib.util
import json
import logging
import os
import queue
import re
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
from ._cgroup import MemoryCgroup

log = logging.getLogger("scdpo.sandbox")

WORKER_SOURCE = Path(_worker.__file__).read_text()
PREIMPORT = [
    "math",
    "cmath",
    "fractions",
    "decimal",
    "itertools",
    "random",
    "numpy",
    "numpy.random",  # lazy in numpy 2: seeding it must not import it in every child
    "sympy",
    "IPython.lib.pretty",
]
TMPFS_MB = 64  # size of the private /tmp; also the largest file the code may write
STARTUP_TIMEOUT = 120.0  # seconds for a worker to import numpy/sympy on a loaded machine
# Beyond a block's timeout, how long the pool waits for its result before declaring the worker
# dead: a fork, a fresh /tmp, killing and reaping the previous solution's processes.
BLOCK_MARGIN = 5.0
CGROUP_MARGIN_MB = 64  # the kernel's limit is this far above the worker's own check
STARTUP_MEMORY_MB = 1024  # a worker's cgroup limit while it imports, before the real one is set
CGROUP_MOUNT = "/run/scdpo-memcg"  # the worker's cgroup, read-only: it reads its OOM kill count
MPL_MOUNT = "/opt/scdpo-matplotlib"  # the prepared matplotlib font cache, read-only
UID_BASE = 2_000_000_000  # children run as UID_BASE + ..., uids no real account uses
SANDBOX_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",  # set iteration order is part of the output: the same on every run
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


def _python_executable() -> str:
    """This venv's interpreter by a path without symlinked directories: only real paths are
    bound into the sandbox, and a venv reached through a link must still be found there."""
    exe = os.path.abspath(sys.executable)
    return os.path.join(os.path.realpath(os.path.dirname(exe)), os.path.basename(exe))


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


def _bwrap_argv(bwrap: str, privileged: bool, extra: list[str] | None = None) -> list[str]:
    if privileged:
        # Not --unshare-all: a user namespace would map the sandbox's root to the real root,
        # whom the kernel exempts from RLIMIT_NPROC. Instead the worker keeps just the
        # capabilities to drop its children to an unused uid (and to kill them).
        ns = (
            "--unshare-ipc --unshare-pid --unshare-net --unshare-uts --unshare-cgroup-try"
            " --cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_KILL"
            # To give each child its own mount and IPC namespace (a fresh /tmp, /dev/shm);
            # children drop every capability with their uid.
            " --cap-add CAP_SYS_ADMIN"
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
    argv += extra or []
    argv += "--remount-ro / --remount-ro /dev --chdir /tmp --clearenv".split()
    for key, value in SANDBOX_ENV.items():
        argv += ["--setenv", key, value]
    return argv + ["--"]


@dataclass(frozen=True)
class _Launch:
    """Everything needed to (re)start the worker of one pool slot."""

    bwrap: str | None  # None: unsandboxed
    privileged: bool
    settings: dict
    cwd: str

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def argv(self, slot: int, cgroup: MemoryCgroup | None, mpl_cache: str | None) -> list[str]:
        settings = dict(self.settings)
        if settings["uid"] is not None:
            settings["uid"] += slot % 64
        python = [_python_executable(), "-s", "-P", "-B", "-c", WORKER_SOURCE]
        if self.bwrap is None:
            if cgroup is not None:
                settings["memcg"] = [str(cgroup.path / f) for f in (cgroup.events, cgroup.current)]
            settings["mpl_cache"] = mpl_cache
            argv = [*python, json.dumps(settings)]
        else:
            extra = []
            if cgroup is not None:
                extra += ["--ro-bind", str(cgroup.path), CGROUP_MOUNT]
                settings["memcg"] = [f"{CGROUP_MOUNT}/{f}" for f in (cgroup.events, cgroup.current)]
            if mpl_cache is not None:
                extra += ["--perms", "0755", "--dir", os.path.dirname(MPL_MOUNT)]
                extra += ["--ro-bind", mpl_cache, MPL_MOUNT, "--dir", _worker.MPL_CONFIG]
                settings["mpl_cache"] = MPL_MOUNT
            prefix = _bwrap_argv(self.bwrap, self.privileged, extra)
            argv = [*prefix, *python, json.dumps(settings)]
        return cgroup.wrap(argv) if cgroup is not None else argv


def _make_launch(config: SandboxConfig) -> _Launch:
    settings = {**asdict(config), "fsize_mb": TMPFS_MB, "preimport": PREIMPORT}
    del settings["allow_unsandboxed"]
    settings.update(seccomp=True, memcg=None, mpl_cache=None)
    bwrap = find_bwrap()
    if bwrap is not None:
        privileged = os.geteuid() == 0
        uid = UID_BASE + (os.getpid() % (1 << 20)) * 64 if privileged else None
        settings.update(uid=uid, pid1=True, workdir="/tmp", private_mounts=privileged)
        return _Launch(bwrap, privileged, settings, "/")
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
    settings.update(uid=None, pid1=False, workdir=workdir, private_mounts=False)
    return _Launch(None, False, settings, workdir)


@functools.cache
def _matplotlib_cache(bwrap: str | None, privileged: bool) -> str | None:
    """A font cache built once, where the sandbox's matplotlib sees the same fonts, so no
    solution spends seconds rebuilding it. None without matplotlib or where it cannot be made."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    base = Path(os.path.realpath(sys.prefix)) / "share" / "scdpo-matplotlib"
    if not os.access(base.parent, os.W_OK):
        base = Path(tempfile.gettempdir()) / f"scdpo-matplotlib-{os.geteuid()}"
    if any(base.glob("fontlist-*.json")):
        return str(base)
    base.mkdir(parents=True, exist_ok=True)
    where = MPL_MOUNT if bwrap is not None else str(base)
    code = f"import os; os.environ['MPLCONFIGDIR'] = {where!r}; import matplotlib.font_manager"
    build = [_python_executable(), "-s", "-B", "-c", code]
    if bwrap is not None:  # inside the sandbox's view of the file system
        extra = ["--perms", "0755", "--dir", os.path.dirname(MPL_MOUNT)]
        build = [*_bwrap_argv(bwrap, privileged, [*extra, "--bind", str(base), MPL_MOUNT]), *build]
    env = dict(SANDBOX_ENV)
    done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode or not any(base.glob("fontlist-*.json")):
        log.warning("no matplotlib font cache for the sandbox: %s", done.stderr[-500:])
        return None
    return str(base)


def _seed_of(blocks: list[str], seed: int | str | None) -> int:
    """The solution's seed: the caller's key, else its first block (the same at every replay)."""
    key = str(seed) if seed is not None else (blocks[0] if blocks else "")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "replace")).digest()[:4], "big")


_MARKER = re.compile(r"<\|(\w+)\|>")
_SURROGATE = re.compile("[\ud800-\udfff]")


def sanitize(text: str) -> str:
    """An output safe for the rest of the pipeline: valid UTF-8 (lone surrogates become U+FFFD),
    and no marker token such as `<|endofblock|>` that would end the block in a transcript."""
    return _MARKER.sub(r"<\\|\1|>", _SURROGATE.sub("\ufffd", text))


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

    def run(self, blocks: list[str], seed: int, timeout: float) -> list[str]:
        """Each block's output, waiting at most its timeout plus a margin for each."""
        try:
            body = json.dumps({"blocks": blocks, "seed": seed}).encode()
            self.proc.stdin.write(_worker.HEADER.pack(len(body)) + body)
        except OSError as exc:
            raise _WorkerDied(f"cannot send to worker: {exc}") from exc
        outputs = []
        for _ in blocks:
            output = self._read(time.monotonic() + timeout + BLOCK_MARGIN)
            if not isinstance(output, str):
                raise _WorkerDied(f"malformed reply from worker: {str(output)[:200]!r}")
            outputs.append(sanitize(output))
        return outputs

    def _read(self, deadline: float):
        """The next frame, from what is buffered or read by then (one read often holds all
        of a solution's frames, which arrive together when its blocks are quick)."""
        while True:
            if len(self._buf) >= _worker.HEADER.size:
                (size,) = _worker.HEADER.unpack_from(self._buf)
                if size > _worker.MAX_FRAME:
                    raise _WorkerDied(f"oversized frame ({size} bytes)")
                end = _worker.HEADER.size + size
                if len(self._buf) >= end:
                    body = bytes(self._buf[_worker.HEADER.size : end])
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


class _Slot:
    """A started worker and the memory cgroup that holds it."""

    def __init__(self, process: _WorkerProcess, cgroup: MemoryCgroup | None) -> None:
        self.process, self.cgroup = process, cgroup

    def close(self) -> None:
        self.process.close()
        if self.cgroup is not None:
            self.cgroup.remove()


class SandboxPool:
    """Pre-started sandboxed workers; each runs one solution at a time in a forked child."""

    def __init__(self, workers: int = 2, config: SandboxConfig = SandboxConfig()) -> None:
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
        if not self._launch.sandboxed:  # the unsandboxed mode's private working directory
            shutil.rmtree(self._launch.cwd, ignore_errors=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, slot: int) -> _Slot:
        # Called only from the slot's own thread, which outlives its worker: bwrap's
        # --die-with-parent fires when the *thread* that started it exits.
        memory = self.config.memory_mb + STARTUP_MEMORY_MB
        cgroup = MemoryCgroup.create(f"w{slot}", memory)
        if cgroup is None and slot == 0:
            log.info("no memory cgroup available: memory is capped per process and by polling")
        argv = self._launch.argv(slot, cgroup, self._mpl_cache)
        env = {} if self._launch.sandboxed else dict(SANDBOX_ENV)
        try:
            worker = _WorkerProcess(argv, self._launch.cwd, env)
            if cgroup is not None:
                # The worker's own image, what one solution may use (the worker stops it there)
                # and a margin, so the kernel's limit is the backstop between two checks.
                limit = cgroup.usage() + ((self.config.memory_mb + CGROUP_MARGIN_MB) << 20)
                cgroup.set_limit(limit)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        missing = [k for k, on in worker.features.items() if not on]
        if missing and slot == 0:
            log.warning("sandbox worker runs without %s (not allowed here)", ", ".join(missing))
        return _Slot(worker, cgroup)

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
                outputs = worker.process.run(blocks, seed, self.config.timeout) if blocks else []
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
