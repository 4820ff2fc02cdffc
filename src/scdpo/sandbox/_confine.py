"""Sandbox worker, part 3 of 7: a child's confinement before it runs code: its own namespaces
(mounts, network, devpts), uid, limits and filter, seeds, matplotlib; then the child's main
loop over its blocks."""

import builtins
import fcntl
import gc
import io
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import types

from ._cells import ACK_FD, CONTROL_FD, run_cell, write_frame
from ._seccomp import LIBC, check, install_seccomp

# ---------------------------------------------------------------- child: process setup

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
TMP_INODES = 16384  # files per tmpfs: a flood of empty files stops here, and so does its cleanup
MPL_CONFIG = "/var/cache/matplotlib"  # MPLCONFIGDIR: a per-solution tmpfs, out of /tmp's listing
# ptys a solution may hold: the host's pool (kernel.pty.max) is shared by every devpts.
DEVPTS_MAX = 16
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
NAMESPACE_FEATURES = ("private_mounts", "private_net", "private_pts")


def fresh_namespaces(s: dict) -> None:
    """Enter new namespaces, so nothing of an earlier solution is visible.

    Mounts: an empty /tmp, /dev/shm and matplotlib directory (files, a chmod-000 directory,
    POSIX IPC objects are gone, dropped by the kernel at exit, not walked in our time) and a
    devpts of its own with at most DEVPTS_MAX ptys. Network: a loopback of its own (no
    TIME_WAIT ports, counters or abstract sockets of the last solution).
    """
    # SysV IPC and message queues: the seccomp filter denies them; without it, a new IPC
    # namespace per child is the equivalent (it costs the kernel more, so only then).
    flags = CLONE_NEWNET if s["private_net"] else 0
    if s["private_mounts"]:
        flags |= CLONE_NEWNS | (0 if s["seccomp"] else CLONE_NEWIPC)
    if flags:
        check(LIBC.unshare(flags), "unshare")
    if s["private_mounts"]:
        fresh_mounts(s)
    if s["private_net"]:
        loopback_up()


def fresh_mounts(s: dict) -> None:
    """The new mount namespace's tmpfs and devpts mounts.

    The venv's path, when it lives under /tmp, is bound back from the worker's own /tmp.
    """
    check(LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    # Handles on the venv's path in the old /tmp, taken in this namespace (a bind mount's
    # source must be in the caller's namespace) before the new tmpfs hides it.
    keep = {name: os.open(os.path.join(s["workdir"], name), os.O_PATH) for name in s["keep"]}
    opts = f"size={s['fsize_mb']}m,nr_inodes={TMP_INODES},mode=1777"
    mount_tmpfs(s["workdir"], opts)
    for name, fd in keep.items():
        target = os.path.join(s["workdir"], name)
        os.mkdir(target, 0o755)
        source = f"/proc/self/fd/{fd}".encode()
        check(LIBC.mount(source, target.encode(), None, MS_BIND | MS_REC, None), "bind venv")
        os.close(fd)
    if s["mpl_cache"] and os.path.isdir(MPL_CONFIG):
        mount_tmpfs(MPL_CONFIG, "size=8m,nr_inodes=256,mode=1777")
    if os.path.isdir("/dev/shm"):
        mount_tmpfs("/dev/shm", f"size={s['fsize_mb']}m,nr_inodes=1024,mode=1777")
    if s["private_pts"]:
        opts = f"newinstance,ptmxmode=0666,mode=0620,max={DEVPTS_MAX}".encode()
        flags = MS_NOSUID | MS_NOEXEC
        check(LIBC.mount(b"devpts", b"/dev/pts", b"devpts", flags, opts), "mount devpts")


def mount_tmpfs(where: str, opts: str) -> None:
    flags = MS_NOSUID | MS_NODEV
    check(LIBC.mount(b"tmpfs", where.encode(), b"tmpfs", flags, opts.encode()), f"mount {where}")


def loopback_up() -> None:
    """A new network namespace's loopback starts down; the notebook has one that works."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def drop_privileges(uid: int | None) -> None:
    """Become an unprivileged uid: no capabilities, and RLIMIT_NPROC applies (not to uid 0)."""
    if uid is None:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def set_limits(s: dict, n_blocks: int) -> None:
    """The child's limits; with `n_blocks` 0 (a spare), all but CPU time, set once it knows."""
    mb = 1 << 20
    limits = {
        resource.RLIMIT_AS: s["memory_mb"] * mb,
        resource.RLIMIT_NPROC: s["max_processes"],
        resource.RLIMIT_FSIZE: s["fsize_mb"] * mb,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: 256,
    }
    if n_blocks:
        limits = {resource.RLIMIT_CPU: int(s["timeout"] * n_blocks) + 2}
    for which, value in limits.items():
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:  # an unprivileged process cannot raise it
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def python_entries(path: str) -> set[str]:
    """Names in `path` on the way to this interpreter's files (a venv under /tmp, bound there)."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    inside = (os.path.relpath(os.path.realpath(p), path) for p in python)
    return {rel.split(os.sep)[0] for rel in inside if not rel.startswith(os.pardir)}


def clean_workdir(path: str, keep: set[str]) -> None:
    """Remove what an earlier solution left in the temp dir, except `keep` (the fallback where
    no fresh tmpfs can be mounted: the unsandboxed mode)."""
    for entry in os.scandir(path):
        if entry.name in keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def seed_all(seed: int) -> None:
    """Same seed, same values: the pipeline re-runs earlier blocks at every submission. Every
    generator the supported libraries own: Python's, numpy's global one, sympy's own (randprime,
    sympy.core.random; Dummy's indices) and tempfile's names."""
    import random

    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % (1 << 32))
    sympy_random = sys.modules.get("sympy.core.random")
    if sympy_random is not None:
        sympy_random.seed(seed)
    dummy = getattr(sys.modules.get("sympy.core.symbol"), "Dummy", None)
    if hasattr(dummy, "_prng"):  # Dummy's indices start from a draw of its own generator
        dummy._prng.seed(seed)
        dummy._base_dummy_index = dummy._prng.randint(10**6, 9 * 10**6)
    tempfile = sys.modules.get("tempfile")
    names = getattr(tempfile, "_RandomNameSequence", None)
    if names is not None:
        sequence = names()
        sequence._rng, sequence._rng_pid = random.Random(seed), os.getpid()
        tempfile._name_sequence = sequence


def prepare_matplotlib(s: dict) -> None:
    """A writable MPLCONFIGDIR holding links to the font cache prepared outside."""
    if not s["mpl_cache"]:
        return
    try:
        os.makedirs(os.environ["MPLCONFIGDIR"], exist_ok=True)
        for name in s["mpl_files"]:
            os.symlink(
                os.path.join(s["mpl_cache"], name), os.path.join(os.environ["MPLCONFIGDIR"], name)
            )
    except OSError:
        pass


def isolate(s: dict, n_blocks: int) -> None:
    """Everything before the first cell runs: namespaces, uid, limits, filter, fresh /tmp."""
    prepare(s)
    confine(s, n_blocks)


def prepare(s: dict) -> None:
    """The part that needs root: own session, OOM preference, new namespaces and mounts."""
    os.setsid()  # own process group, so the unsandboxed mode can still kill the whole tree
    try:  # under a memory cgroup the kernel's OOM killer then picks the code, not the worker
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    if any(s[key] for key in NAMESPACE_FEATURES):
        fresh_namespaces(s)


def confine(s: dict, n_blocks: int = 0) -> None:
    """Drop to the child's uid, set the limits (CPU time once `n_blocks` is known), filter."""
    drop_privileges(s["uid"])
    # The uid change made it non-dumpable, which hides a solution's processes from each other
    # in /proc (hidepid); they are all its own, as in a notebook.
    LIBC.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    set_limits(s, 0)
    if n_blocks:
        set_limits(s, n_blocks)
    if s["seccomp"]:
        install_seccomp(s["seccomp"])


def child_main(blocks, n: int, first: int, s: dict, fds: tuple[int, int, int]) -> None:
    """Runs in the (already isolated) child: run the `n` cells, report each result, exit."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Move the pipes above the target numbers first, so no dup2 overwrites one of them.
    data_w, ctrl_w, ack_r = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in fds)
    for source, target in ((data_w, 1), (data_w, 2), (ctrl_w, CONTROL_FD), (ack_r, ACK_FD)):
        os.dup2(source, target)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.closerange(ACK_FD + 1, 1 << 16)  # the worker's pipes must not leak into user code
    os.chdir(s["workdir"])
    if not s["private_mounts"]:
        clean_workdir(s["workdir"], s["keep"])
    prepare_matplotlib(s)
    seed_all(s["seed"] + first)
    out = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    ns = main_namespace()
    # The zygote runs without the garbage collector; collected once now, its counts (and so
    # the addresses that the code's objects get: reprs, id order) are the same every time.
    gc.enable()
    gc.collect()
    me = os.getpid()
    for number, src in enumerate(blocks, first + 1):
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(), out, out
        result, tail = run_cell(src, ns, number)
        flush(sys.stdout, out)
        if os.getpid() != me:  # a process the cell forked must not go on to run later cells
            os._exit(0)
        write_frame(CONTROL_FD, clip(result, tail, number, s["max_output_chars"]))
        if number < first + n and not os.read(ACK_FD, 1):
            break
    os._exit(0)


def main_namespace() -> dict:
    """The cells' namespace is a fresh `__main__` module, as in Jupyter: functions and classes
    defined in a cell can be pickled, so multiprocessing.Pool.map(f, ...) works."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


def clip(result: str, tail: str, number: int, limit: int) -> dict:
    """A block's result as sent to the worker: its head, its length and, for an error, its
    last part (`ErrorName: message`) and where it starts, so truncation keeps it in view."""
    at = result.rfind(tail) if tail else len(result)
    last = tail[: limit // 2] if at >= 0 else ""
    at = at if at >= 0 else len(result)
    return {"i": number, "text": result[:limit], "n": len(result), "last": last, "at": at}


def flush(*streams) -> None:
    for stream in streams:
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - user code may have replaced or closed it
            pass
