"""How a sandbox worker is started: its settings, the bubblewrap command line, its source."""

from __future__ import annotations

import ast
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import _confine, _userns
from ._cgroup import SOCKET_MB, WorkerCgroups

log = logging.getLogger("scdpo.sandbox")

# The worker's parts, in the order they run as one program: each is a module of its own (tests
# import them), and `python -c` gets them concatenated, their imports of each other dropped.
WORKER_PARTS = ("_cells", "_seccomp", "_confine", "_watch", "_zygote", "_supervise", "_worker")


def worker_source() -> str:
    """The sandbox worker as one standard-library-only program for `python -c`: nothing of the
    project needs to be visible inside the sandbox."""
    chunks = []
    for part in WORKER_PARTS:
        text = (Path(__file__).parent / f"{part}.py").read_text()
        drop = set()
        for node in ast.parse(text).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                drop.update(range(node.lineno - 1, node.end_lineno))
        chunks.append(
            "".join(line for i, line in enumerate(text.splitlines(True)) if i not in drop)
        )
    return "\n\n".join(chunks)


WORKER_SOURCE = worker_source()
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
SETTINGS_SIZE = 4096  # the worker's settings argument is padded to a multiple of this
STARTUP_TIMEOUT = 120.0  # seconds for a worker to import numpy/sympy on a loaded machine
# Beyond a block's timeout, how long the pool waits for its result before declaring the worker
# dead: a fork, a fresh /tmp, killing and reaping the previous solution's processes.
BLOCK_MARGIN = 5.0
CGROUP_MARGIN_MB = 64  # the kernel's limit is this far above the worker's own check
STARTUP_MEMORY_MB = 1024  # a worker's cgroup limit while it imports, before the real one is set
# The worker's memory cgroup, read-only, in a directory only the worker (uid 0) may enter: it
# reads its usage and OOM kill count there; a child, as another uid, cannot (no channel).
PRIVATE_DIR = "/run/scdpo"
CGROUP_MOUNT = f"{PRIVATE_DIR}/memcg"
MPL_MOUNT = "/opt/scdpo-matplotlib"  # the prepared matplotlib font cache, read-only
UID_BASE = 2_000_000_000  # children run as UID_BASE + ..., uids no real account uses
UID_SLOTS = 64  # uids per pool: slot k of a pool runs as its block's base + k % UID_SLOTS
UID_BLOCKS = (0xFFFF_FFFE - UID_BASE) // UID_SLOTS
UID_LOCKS = ("/run/scdpo-sandbox-uids", os.path.join(tempfile.gettempdir(), "scdpo-sandbox-uids"))
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


DEFAULT_CONFIG = SandboxConfig()


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


def _bwrap_argv(
    bwrap: str, privileged: bool, extra: list[str] | None = None, worker: bool = True
) -> list[str]:
    if privileged:
        # Not --unshare-all: a user namespace would map the sandbox's root to the real root,
        # whom the kernel exempts from RLIMIT_NPROC. Instead the worker keeps just the
        # capabilities to drop its children to an unused uid (see _worker.KEPT_CAPS). bwrap
        # hands it all of them: an exec that gains capabilities clears the personality flag
        # that turns address randomisation off, and the worker execs itself once to set it;
        # then it drops the rest, from its bounding set too. Anything else started this way
        # (the font cache's build) gets none.
        ns = "--unshare-ipc --unshare-pid --unshare-net --unshare-uts --unshare-cgroup-try".split()
        ns += ["--cap-add" if worker else "--cap-drop", "ALL"]
    else:
        ns = ["--unshare-all"]  # unprivileged bwrap keeps no capabilities anyway
    argv = [bwrap, *ns, "--die-with-parent", "--as-pid-1", "--new-session"]
    # The empty /tmp first: a venv under /tmp (a checkout there) is bound on top of it below.
    size = ["--size", str(TMPFS_MB << 20)] if _supports(bwrap, "--size") else []
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", *size, "--tmpfs", "/tmp"]
    # No ptys from bwrap's devpts, which has no limit but the host's: each child mounts its own,
    # with a small `max`, over it (where it cannot, there are no ptys at all).
    argv += ["--ro-bind", "/dev/null", "/dev/pts/ptmx"]
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


class UidLease:
    """A block of UID_SLOTS child uids that no other live pool on this host holds.

    Each block has a lock file; a pool holds the lock of its block (flock, released when the
    pool closes or its process dies, with its workers), so two pools, in one process or in
    two, never share a uid, and with it a process limit.
    """

    def __init__(self) -> None:
        self.fd, self.base = self._acquire()

    @staticmethod
    def _acquire() -> tuple[int, int]:
        for directory in UID_LOCKS:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError:
                continue
            for block in range(UID_BLOCKS):
                try:
                    fd = os.open(f"{directory}/{block}", os.O_RDWR | os.O_CREAT, 0o600)
                except OSError:
                    break  # not writable: the next directory
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                return fd, UID_BASE + block * UID_SLOTS
        raise SandboxError(f"no free block of sandbox uids (lock files in {UID_LOCKS})")

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class _Launch:
    """Everything needed to (re)start the worker of one pool slot."""

    bwrap: str | None  # None: unsandboxed
    privileged: bool
    settings: dict
    cwd: str
    uids: UidLease | None = None  # the children's uids (privileged mode only)

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def argv(self, slot: int, cgroups: WorkerCgroups | None, mpl_cache: str | None) -> list[str]:
        settings = dict(self.settings)
        if self.uids is not None:
            settings["uid"] = self.uids.base + slot % UID_SLOTS
        memory = cgroups.memory if cgroups is not None else None
        python = [_python_executable(), "-s", "-P", "-B", "-c", WORKER_SOURCE]
        if self.bwrap is None:
            if memory is not None:
                settings["memcg"] = memory.files(str(memory.path))
            settings["mpl_cache"] = mpl_cache
            argv = [*python, settings_argument(settings)]
        else:
            extra = []
            if memory is not None:
                extra += ["--perms", "0700", "--dir", PRIVATE_DIR]
                extra += ["--ro-bind", str(memory.path), CGROUP_MOUNT]
                settings["memcg"] = memory.files(CGROUP_MOUNT)
            if mpl_cache is not None:
                extra += ["--perms", "0755", "--dir", os.path.dirname(MPL_MOUNT)]
                extra += ["--ro-bind", mpl_cache, MPL_MOUNT, "--dir", _confine.MPL_CONFIG]
                settings["mpl_cache"] = MPL_MOUNT
            prefix = _bwrap_argv(self.bwrap, self.privileged, extra)
            argv = [*prefix, *python, settings_argument(settings)]
        return cgroups.wrap(argv) if cgroups is not None else argv

    def close(self) -> None:
        if self.uids is not None:
            self.uids.release()


def settings_argument(settings: dict) -> str:
    """The worker's settings, padded to one length: the worker's memory, and so the addresses
    its children's objects get, then do not depend on how many digits a setting has."""
    text = json.dumps(settings)
    return text.ljust(-(-len(text) // SETTINGS_SIZE) * SETTINGS_SIZE)


def _make_launch(config: SandboxConfig) -> _Launch:
    settings = {**asdict(config), "fsize_mb": TMPFS_MB, "preimport": PREIMPORT}
    settings["socket_mb"] = SOCKET_MB
    del settings["allow_unsandboxed"]
    settings.update(seccomp=True, memcg=None, mpl_cache=None, uid=None)
    bwrap = find_bwrap()
    privileged = os.geteuid() == 0
    unusable = _unusable(bwrap, privileged) if bwrap is not None else None
    if bwrap is not None and unusable is None:
        settings.update(pid1=True, workdir="/tmp", last_pid_fd=None)
        settings.update({key: privileged for key in _confine.NAMESPACE_FEATURES})
        uids = UidLease() if privileged else None
        return _Launch(bwrap, privileged, settings, "/", uids)
    why = unusable or "bubblewrap (bwrap) is not installed (install the `bubblewrap` package)"
    if not config.allow_unsandboxed:
        raise SandboxError(
            f"{why}. Refusing to run model-written code unsandboxed: see {_userns.DOCS} for the "
            "options, one of them SandboxConfig(allow_unsandboxed=True) (config: "
            "sandbox.allow_unsandboxed: true), at your own risk"
        )
    workdir = tempfile.mkdtemp(prefix="scdpo-sandbox-")
    log.warning(
        "!!! %s: running model-written code UNSANDBOXED with your user's rights (only resource "
        "limits and the seccomp filter apply); workdir %s !!!",
        why,
        workdir,
    )
    settings.update(pid1=False, workdir=workdir, last_pid_fd=None)
    settings.update({key: False for key in _confine.NAMESPACE_FEATURES})
    return _Launch(None, False, settings, workdir)


@functools.cache
def _unusable(bwrap: str, privileged: bool) -> str | None:
    """Why bwrap cannot build the sandbox here (not root: no user namespaces, typically), asked
    once per process before the first pool starts any worker; None when it can."""
    argv = _bwrap_argv(bwrap, privileged, worker=False) + [_python_executable(), "-S", "-c", ""]
    error = _userns.probe(argv)
    if error is None:
        return None
    return _userns.explain(error, privileged, [] if privileged else _userns.sysctl_reasons())


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
        mounts = [*extra, "--bind", str(base), MPL_MOUNT]
        build = [*_bwrap_argv(bwrap, privileged, mounts, worker=False), *build]
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
