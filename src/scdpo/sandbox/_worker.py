"""Sandbox worker, part 7 of 7, its main: runs inside bwrap, forks one fresh child per solution.

Standard library only: the pool starts it as `python -I -B -c <this source> <settings json>`, so
nothing of the project needs to be visible inside the sandbox. It talks to the pool over its
stdin/stdout with length-prefixed JSON frames: a request is a list of code blocks, the reply the
list of their outputs. Each child runs the blocks like notebook cells (shared namespace; stdout,
stderr and the repr of a final expression; Jupyter-style tracebacks), while the worker enforces
the per-block timeout, caps the output it keeps and kills the child's whole process tree.
"""

import builtins
import ctypes
import gc
import io
import json
import linecache
import os
import signal
import sys

from ._cells import read_frame, run_cell, write_frame
from ._confine import MPL_CONFIG, NAMESPACE_FEATURES, isolate, python_entries
from ._seccomp import LIBC, check, seccomp_program
from ._supervise import Supervisor
from ._watch import Outbox
from ._zygote import Zygote, ZygoteDied

# ---------------------------------------------------------------- worker main loop


def harden_self() -> None:
    """Keep children from signalling (SIGINT) or ptrace-ing the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0


def preimport(names: list[str]) -> None:
    """Warm the module cache before forking, so children start without import cost."""
    for name in names:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a missing optional library only costs speed
            pass
    warm_up()
    gc.collect()
    gc.freeze()  # keeps the children's garbage collector off the shared pages


def warm_up() -> None:
    """Run a few cells here once, so lazy setup (tokenizer regexes, the pretty printer,
    traceback machinery) happens before forking instead of in every child."""
    saved = sys.stdout
    sys.stdout = io.StringIO()
    try:
        for src in ("x = [1.5, 'a', {2: None}]\nx", "print(x);", "1 / 0", "x = ("):
            run_cell(src, {"__builtins__": builtins}, 0)
    finally:
        sys.stdout = saved
        linecache.cache.pop("<cell 0>", None)


ADDR_NO_RANDOMIZE = 0x0040000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MNT_DETACH = 0x2, 0x4, 0x8, 0x20, 0x2
PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


def fixed_addresses() -> bool:
    """Address randomisation off for the worker and so for every child forked from it (a
    personality flag, which applies from the next exec: so the worker execs itself once).
    The same code then gets the same addresses: default reprs, id-ordered sets repeat."""
    query = ctypes.c_ulong(0xFFFFFFFF)
    persona = LIBC.personality(query)
    if persona == -1:
        return False
    if persona & ADDR_NO_RANDOMIZE:
        return True
    if LIBC.personality(ctypes.c_ulong(persona | ADDR_NO_RANDOMIZE)) == -1:
        return False
    if not LIBC.personality(query) & ADDR_NO_RANDOMIZE:
        return False  # refused (a container's own seccomp profile)
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:
        LIBC.personality(ctypes.c_ulong(persona))
    return False


# What the worker keeps: CAP_KILL, CAP_SETGID, CAP_SETUID (to drop its children to their uid),
# CAP_NET_ADMIN (their loopback), CAP_SYS_ADMIN (their namespaces and mounts, the pid reset).
KEPT_CAPS = (5, 6, 7, 12, 21)
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def drop_capabilities() -> None:
    """Keep only KEPT_CAPS: effective, permitted, and in the bounding set, so no exec gives
    any other back."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in KEPT_CAPS:
            check(LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    check(LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    mask = sum(1 << cap for cap in KEPT_CAPS)
    data = (CapData * 2)(CapData(mask, mask, 0), CapData(0, 0, 0))  # 64 bits in two halves
    check(LIBC.capset(ctypes.byref(CapHeader(0x20080522, 0)), data), "capset")


def hide_other_pids() -> bool:
    """A child sees only its own processes in /proc (hidepid), not the worker's and the
    zygote's, whose CPU times and fault counts grow with every solution."""
    opts = b"hidepid=2,gid=0"  # the worker and the zygote (gid 0) still see everything
    return LIBC.mount(None, b"/proc", None, MS_REMOUNT | PROC_FLAGS, opts) == 0


def open_last_pid() -> int | None:
    """ns_last_pid of the worker's pid namespace, writable: bwrap's /proc/sys is read-only, so
    it is opened in a proc mounted on top for a moment."""
    if LIBC.mount(b"proc", b"/proc", b"proc", PROC_FLAGS, None) != 0:
        return None
    try:
        return os.open("/proc/sys/kernel/ns_last_pid", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        LIBC.umount2(b"/proc", MNT_DETACH)


def probe(s: dict, key: str) -> bool:
    """Whether a child can set itself up with `key` alone (namespaces, filter allowed here)."""
    s = {**s, "seccomp": None, **dict.fromkeys(NAMESPACE_FEATURES), key: s[key]}
    if key == "private_pts":  # a devpts of its own needs a mount namespace of its own
        s["private_mounts"] = True
    pid = os.fork()
    if pid == 0:
        try:
            isolate(s, 1)
            os._exit(0)
        finally:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def configure(settings: dict) -> dict[str, bool]:
    """Fill in what the worker learns about its sandbox, once; return which protections it
    has (the pool logs those it lacks)."""
    workdir = settings["workdir"]
    settings["keep"] = python_entries(workdir)
    x86_64 = os.uname().machine == "x86_64"  # the filter's system call numbers are x86_64's
    settings["seccomp"] = seccomp_program() if settings["seccomp"] and x86_64 else None
    if settings["mpl_cache"]:
        settings["mpl_files"] = os.listdir(settings["mpl_cache"])
    for key in (*NAMESPACE_FEATURES, "seccomp"):
        if settings[key] and not probe(settings, key):
            settings[key] = None
            sys.stderr.write(f"scdpo sandbox worker: {key} unavailable here, not used\n")
    private = settings["private_mounts"] and os.path.isdir(MPL_CONFIG)
    mpl = MPL_CONFIG if private else os.path.join(workdir, ".matplotlib")
    os.environ.update(MPLBACKEND="Agg", MPLCONFIGDIR=mpl)
    features = {k: bool(settings[k]) for k in (*NAMESPACE_FEATURES, "seccomp")}
    features.update(pid_reset=False, hidden_pids=False)
    if settings["private_mounts"]:  # root in its own sandbox: /proc is the sandbox's own
        settings["last_pid_fd"] = open_last_pid()
        features.update(pid_reset=settings["last_pid_fd"] is not None)
        features.update(hidden_pids=hide_other_pids())
    return features


def main() -> None:
    aslr_off = fixed_addresses()  # first: it may exec this program again
    settings = json.loads(sys.argv[1])
    if settings["uid"] is not None:  # root, from bwrap with every capability
        drop_capabilities()
    harden_self()
    features = configure(settings)
    preimport(settings["preimport"])
    supervisor = Supervisor(settings)
    supervisor.zygote = Zygote(settings)  # after the imports, before any solution
    # One solution through it first: every later child forks from the zygote in the state it
    # has after a child (the first would see other addresses than the rest).
    supervisor.run(["None"], 0, lambda text: None)
    if settings["last_pid_fd"] is not None:
        os.close(settings["last_pid_fd"])  # the zygote's now
    write_frame(1, {"ready": {**features, "aslr_off": aslr_off}})
    while (request := read_frame(0)) is not None:
        serve(supervisor, [str(b) for b in request["blocks"]], int(request["seed"]))


def serve(supervisor: Supervisor, blocks: list[str], seed: int) -> None:
    """Exactly one frame per block, whatever happens while running them."""
    outputs: list[str] = []
    supervisor.outbox = outbox = Outbox()

    def emit(text: str) -> None:
        outputs.append(text)
        outbox.add(text)

    try:
        supervisor.run(blocks, seed, emit)
    except ZygoteDied:
        raise SystemExit(1) from None  # the pool starts a new worker
    except Exception as exc:  # noqa: BLE001 - the worker must outlive any one solution
        supervisor.kill_tree(0)
        while len(outputs) < len(blocks):
            emit(f"RuntimeError: the sandbox failed: {type(exc).__name__}: {exc}")
    outbox.flush()


if __name__ == "__main__":
    main()
