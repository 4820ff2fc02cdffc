"""Sandbox worker, part 2 of 6: a child's confinement before it runs code: fresh mounts, the
seccomp filter, limits, seeds, matplotlib; then the child's main loop over its blocks."""

import builtins
import ctypes
import fcntl
import io
import os
import resource
import shutil
import signal
import struct
import sys

from ._cells import ACK_FD, CONTROL_FD, run_cell, write_frame

# ---------------------------------------------------------------- child: process setup

CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
TMP_INODES = 16384  # files per tmpfs: a flood of empty files stops here, and so does its cleanup
MPL_CONFIG = "/var/cache/matplotlib"  # MPLCONFIGDIR: a per-solution tmpfs, out of /tmp's listing
LIBC = ctypes.CDLL(None, use_errno=True)


def check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def fresh_mounts(s: dict) -> None:
    """Enter a new mount namespace with an empty /tmp and /dev/shm.

    Nothing an earlier solution left (files, a chmod-000 directory, SysV or POSIX IPC objects)
    is visible, and dropping the old ones is the kernel's work at exit, not a walk in our time.
    The venv's path, when it lives under /tmp, is bound back from the worker's own /tmp.
    """
    # SysV IPC and message queues: the seccomp filter denies them; without it, a new IPC
    # namespace per child is the equivalent (it costs the kernel more, so only then).
    ipc = 0 if s["seccomp"] else CLONE_NEWIPC
    check(LIBC.unshare(CLONE_NEWNS | ipc), "unshare")
    check(LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    # Handles on the venv's path in the old /tmp, taken in this namespace (a bind mount's
    # source must be in the caller's namespace) before the new tmpfs hides it.
    keep = {name: os.open(os.path.join(s["workdir"], name), os.O_PATH) for name in s["keep"]}
    tmp = s["workdir"].encode()
    opts = f"size={s['fsize_mb']}m,nr_inodes={TMP_INODES},mode=1777".encode()
    check(LIBC.mount(b"tmpfs", tmp, b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount /tmp")
    for name, fd in keep.items():
        target = os.path.join(s["workdir"], name)
        os.mkdir(target, 0o755)
        source = f"/proc/self/fd/{fd}".encode()
        check(LIBC.mount(source, target.encode(), None, MS_BIND | MS_REC, None), "bind venv")
        os.close(fd)
    if s["mpl_cache"] and os.path.isdir(MPL_CONFIG):
        opts = b"size=8m,nr_inodes=256,mode=1777"
        check(
            LIBC.mount(b"tmpfs", MPL_CONFIG.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mpl"
        )
    if os.path.isdir("/dev/shm"):
        opts = f"size={s['fsize_mb']}m,nr_inodes=1024,mode=1777".encode()
        check(LIBC.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, opts), "/dev/shm")


# x86_64 system calls the code never needs and that would let state outlive a solution (SysV
# IPC, POSIX message queues, keyrings), hold memory outside files and processes (memfd), or
# widen the attack surface (new namespaces, ptrace, bpf, io_uring, userfaultfd, perf).
DENIED_SYSCALLS = {
    29,
    30,
    31,
    64,
    65,
    66,
    67,
    68,
    69,
    70,
    71,
    220,  # shm*, sem*, msg*, semtimedop
    240,
    241,
    242,
    243,
    244,
    245,  # mq_*
    248,
    249,
    250,  # add_key, request_key, keyctl
    319,
    447,  # memfd_create, memfd_secret
    272,
    308,  # unshare, setns
    101,
    310,
    311,  # ptrace, process_vm_readv/writev
    165,
    166,
    155,
    161,  # mount, umount2, pivot_root, chroot
    298,
    321,
    323,
    425,
    426,
    427,  # perf_event_open, bpf, userfaultfd, io_uring_*
}
SYS_CLONE, SYS_CLONE3 = 56, 435
CLONE_NAMESPACES = 0x7E020000  # CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}
AUDIT_ARCH_X86_64 = 0xC000003E


def seccomp_program() -> bytes:
    """A classic BPF seccomp filter: the calls above fail with EPERM, clone3 with ENOSYS (so
    libc falls back to clone, whose flags a classic filter can read), other ABIs are refused."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple[int, object, object, int]] = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 0, "enosys", AUDIT_ARCH_X86_64),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, "eperm", 0, 0x40000000),  # the x32 ABI
        *((jeq, "eperm", 0, nr) for nr in sorted(DENIED_SYSCALLS)),
        (jeq, "enosys", 0, SYS_CLONE3),
        (jeq, 0, "allow", SYS_CLONE),
        (ld, 0, 0, 16),  # low half of clone's flags
        (jset, "eperm", "allow", CLONE_NAMESPACES),
    ]
    labels = {"allow": 0x7FFF0000, "eperm": 0x00050000 | 1, "enosys": 0x00050000 | 38}
    at = {name: len(prog) + i for i, name in enumerate(labels)}
    prog += [(ret, 0, 0, value) for value in labels.values()]
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        jt, jf = (at[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        out += struct.pack("<HBBI", code, jt, jf, k)
    return bytes(out)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    check(LIBC.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    check(LIBC.prctl(22, 2, ctypes.byref(fprog), 0, 0), "PR_SET_SECCOMP")


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
    """Same seed, same values: the pipeline re-runs earlier blocks at every submission."""
    import random

    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % (1 << 32))


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
    if s["private_mounts"]:
        fresh_mounts(s)


def confine(s: dict, n_blocks: int = 0) -> None:
    """Drop to the child's uid, set the limits (CPU time once `n_blocks` is known), filter."""
    drop_privileges(s["uid"])
    set_limits(s, 0)
    if n_blocks:
        set_limits(s, n_blocks)
    if s["seccomp"]:
        install_seccomp(s["seccomp"])


def child_main(blocks: list[str], first: int, s: dict, fds: tuple[int, int, int]) -> None:
    """Runs in the (already isolated) child: run the cells, report each result, exit."""
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
    ns = {"__name__": "__main__", "__builtins__": builtins}
    me = os.getpid()
    for number, src in enumerate(blocks, first + 1):
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(), out, out
        result, is_error = run_cell(src, ns, number)
        flush(sys.stdout, out)
        if os.getpid() != me:  # a process the cell forked must not go on to run later cells
            os._exit(0)
        write_frame(CONTROL_FD, clip(result, is_error, number, s["max_output_chars"]))
        if number < first + len(blocks) and not os.read(ACK_FD, 1):
            break
    os._exit(0)


def clip(result: str, is_error: bool, number: int, limit: int) -> dict:
    """A block's result as sent to the worker: its head, its length and, for an error, its
    final line, so truncation can keep `ErrorName: message` in view."""
    last = result.rstrip("\n").rsplit("\n", 1)[-1][: limit // 2] if is_error else ""
    return {"i": number, "text": result[:limit], "n": len(result), "last": last}


def flush(*streams) -> None:
    for stream in streams:
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - user code may have replaced or closed it
            pass
