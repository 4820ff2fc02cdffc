"""The sandbox worker: runs inside bwrap, forks one fresh child per solution.

Standard library only: the pool starts it as `python -I -B -c <this source> <settings json>`, so
nothing of the project needs to be visible inside the sandbox. It talks to the pool over its
stdin/stdout with length-prefixed JSON frames: a request is a list of code blocks, the reply the
list of their outputs. Each child runs the blocks like notebook cells (shared namespace; stdout,
stderr and the repr of a final expression; Jupyter-style tracebacks), while the worker enforces
the per-block timeout, caps the output it keeps and kills the child's whole process tree.
"""

import ast
import builtins
import codeop
import ctypes
import fcntl
import gc
import io
import json
import linecache
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
import tokenize
import traceback

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20  # a request holds one solution's code; anything bigger is a broken peer
CONTROL_FD = 3  # the child's end of the per-block result pipe
MEMORY_POLL = 0.1  # seconds between checks of the sandbox's total memory
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
ACK_FD = 4  # the worker's go-ahead for the next block, so each block's output stays its own
DASHES = "-" * 75
EXIT_HINT = "An exception has occurred, use %tb to see the full traceback.\n"
# How IPython parses a cell (codeop's flags): an unclosed bracket is "incomplete input".
PARSE_FLAGS = (
    ast.PyCF_ONLY_AST
    | getattr(codeop, "PyCF_DONT_IMPLY_DEDENT", 0)
    | getattr(codeop, "PyCF_ALLOW_INCOMPLETE_INPUT", 0)
)
SELF = globals().get("__file__", "<string>")  # our own frames are hidden from tracebacks


# ---------------------------------------------------------------- framing (both sides of pipes)


def read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(fd: int):
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)


def write_frame(fd: int, obj) -> None:
    body = json.dumps(obj).encode()
    data = HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


# ---------------------------------------------------------------- child: notebook-cell semantics


def is_quiet(src: str) -> bool:
    """IPython hides the value of a cell whose last token is ';'."""
    last = None
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type not in skip and tok.type not in (tokenize.INDENT, tokenize.DEDENT):
                last = tok
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def format_value(value) -> str:
    """Jupyter's text/plain: IPython's pretty printer where available, else repr."""
    pretty = sys.modules.get("IPython.lib.pretty")
    if pretty is not None:
        return pretty.pretty(value, max_width=79, max_seq_length=1000)
    return repr(value)


def cell_name(filename: str) -> str | None:
    if filename.startswith("<cell ") and filename.endswith(">"):
        return f"Cell In[{filename[6:-1]}]"
    return None


def format_frame(frame: traceback.FrameSummary) -> str:
    where = cell_name(frame.filename) or f"File {frame.filename}"
    head = f"{where}, line {frame.lineno}"
    if frame.name != "<module>":
        head += f", in {frame.name}"
    lines = linecache.getlines(frame.filename)
    lo = max(frame.lineno - 3, 0)
    body = []
    for no in range(lo + 1, min(frame.lineno, len(lines)) + 1):
        mark = "---->" if no == frame.lineno else "     "
        body.append(f"{mark} {no} {lines[no - 1].rstrip()}")
    return "\n".join([head, *body]) + "\n"


def collapse(frames: list[traceback.FrameSummary]) -> list[str]:
    """Render frames, folding runs of one recursive frame so the error line stays in view."""
    out: list[str] = []
    i = 0
    while i < len(frames):
        j = i
        key = (frames[i].filename, frames[i].lineno, frames[i].name)
        while (
            j + 1 < len(frames)
            and (frames[j + 1].filename, frames[j + 1].lineno, frames[j + 1].name) == key
        ):
            j += 1
        out.append(format_frame(frames[i]))
        if j - i >= 3:
            out.append(
                f"    [... skipping similar frames: {key[2]} at line {key[1]} ({j - i - 1} times)]"
            )
            out.append(format_frame(frames[j]))
        else:
            out.extend(format_frame(f) for f in frames[i + 1 : j + 1])
        i = j + 1
    return out


def format_error(exc: BaseException) -> str:
    """The traceback text a Jupyter client shows (its traceback entries joined by newlines)."""
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        return EXIT_HINT + "\n" + traceback.format_exception_only(exc)[-1]
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(exc))
        cell = cell_name(exc.filename or "")
        return text.replace(f'File "{exc.filename}"', cell) if cell else text
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != SELF]
    parts = [DASHES, f"{name:<42}Traceback (most recent call last)", *collapse(frames)]
    return "\n".join(parts) + f"\n{name}: {safe_str(exc)}"


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - the model's own exception class may fail in __str__
        return "<exception str() failed>"


def run_cell(src: str, ns: dict, number: int) -> tuple[str, bool]:
    """Execute one block in `ns`; return the displayed value or the error text, and which."""
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    try:
        tree = compile(src, filename, "exec", PARSE_FLAGS, dont_inherit=True)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), ns)
        if last is None:
            return "", False
        value = eval(compile(last, filename, "eval"), ns)
        if value is None or is_quiet(src):
            return "", False
        ns["_"] = value
        return format_value(value), False
    except BaseException as exc:  # noqa: B036 - SystemExit/KeyboardInterrupt are cell errors too
        try:
            return format_error(exc), True
        except BaseException as inner:  # noqa: B036 - e.g. a traceback too deep to format
            return f"{type(exc).__name__}: <traceback could not be formatted: {inner!r}>", True


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


# ---------------------------------------------------------------- worker: supervise one child

CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8 continuation bytes: not characters of their own


class Capture:
    """Keeps at most `cap` bytes of a block's output, counts the characters of the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.dropped = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = max(self.cap - len(self.data), 0)
        self.data += chunk[:room]
        if len(chunk) > room:
            self.dropped += len(chunk[room:].translate(None, CONTINUATION))

    def take(self) -> tuple[str, int]:
        text, dropped = self.data.decode("utf-8", "replace"), self.dropped
        self.data, self.dropped = bytearray(), 0
        return text, dropped


def compose(out: str, dropped: int, result: dict, limit: int) -> str:
    """Output then result, cut to `limit` characters: the head, an exact count of what was left
    out and, for an error, its final line."""
    text, last = result["text"], result["last"]
    total = len(out) + dropped + result["n"]
    if total <= limit:
        return out + text
    keep = max(limit - len(last), 0)
    head = out[:keep] if dropped else (out + text)[:keep]
    note = f"\n... [output truncated: {max(total - len(head) - len(last), 0)} more characters]"
    return head + note + (f"\n{last}" if last else "")


def message(text: str) -> dict:
    """A result the worker itself gives (timeout, memory, a dead process): an error line."""
    return {"text": text, "n": len(text), "last": text}


def valid_result(value: object, number: int) -> bool:
    return (
        isinstance(value, dict)
        and value.get("i") == number
        and isinstance(value.get("text"), str)
        and isinstance(value.get("last"), str)
        and isinstance(value.get("n"), int)
        and value["n"] >= len(value["text"])
    )


def drain(fd: int, cap: Capture) -> bool:
    """Read what is buffered in a non-blocking pipe; False at end of file.

    Bounded, so a process that writes without pause cannot keep the worker here forever.
    """
    for _ in range(64):
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        cap.add(chunk)
    return True


def send_ack(fd: int) -> None:
    try:
        os.write(fd, b"k")
    except OSError:  # the child is gone; its exit is noticed on the other pipes
        pass


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no name of their own
        rtmin = getattr(signal, "SIGRTMIN", 34)
        return f"SIGRTMIN+{number - rtmin}" if number > rtmin else f"signal {number}"


def death_message(status: int | None) -> str:
    if status is not None and os.WIFSIGNALED(status):
        sig = signal_name(os.WTERMSIG(status))
        return f"RuntimeError: the code's process was killed by {sig}; its state was lost"
    code = "unknown" if status is None else os.waitstatus_to_exitcode(status)
    return f"RuntimeError: the code's process exited with status {code}; its state was lost"


def stop_message(reason: str, s: dict) -> str:
    """Why the worker stopped a child: what the solution sees instead of the block's result."""
    if reason == "timeout":
        return (
            f"TimeoutError: the code block did not finish within {s['timeout']:g} seconds"
            " and was stopped"
        )
    if reason == "memory":
        return (
            f"MemoryError: the code's processes used more than {s['memory_mb']} MB together"
            " and were stopped"
        )
    return "RuntimeError: the code's process broke the sandbox protocol and was stopped"


def anon_kb(pid: str) -> int:
    """Resident anonymous memory of a process (statm: resident minus file-backed/shared)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            fields = f.read().split()
    except OSError:  # already gone
        return 0
    return (int(fields[1]) - int(fields[2])) * PAGE_KB


def tree_memory_mb(baseline_kb: int) -> float:
    """Memory the sandbox's processes added beyond the worker image they share copy-on-write.

    The fallback where no memory cgroup holds the worker. Only meaningful as PID 1, where
    /proc lists just the sandbox.
    """
    pids = [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]
    return sum(max(anon_kb(p) - baseline_kb, 0) for p in pids) / 1024


def read_counter(path: str, key: str | None = None) -> int:
    """A number from a cgroup file: the whole file, or the value on its `key` line."""
    try:
        with open(path) as f:
            if key is None:
                return int(f.read())
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


class MemoryWatch:
    """The memory the sandbox's processes use, from the worker's cgroup when it has one
    (everything: shared memory, tmpfs files, kernel memory), else from /proc (anonymous only)."""

    def __init__(self, s: dict, baseline_kb: int) -> None:
        self.s, self.baseline_kb = s, baseline_kb
        self.events, self.current = s["memcg"] or (None, None)
        self.start_kills = self.start_bytes = 0

    def start(self) -> None:
        if self.events:
            self.start_kills = read_counter(self.events, "oom_kill")
            self.start_bytes = read_counter(self.current)

    def killed(self) -> bool:
        """Whether the kernel's OOM killer struck since `start`."""
        return bool(self.events) and read_counter(self.events, "oom_kill") > self.start_kills

    def over(self) -> bool:
        if self.events:
            used = read_counter(self.current) - self.start_bytes
            return self.killed() or used > self.s["memory_mb"] << 20
        return self.s["pid1"] and tree_memory_mb(self.baseline_kb) > self.s["memory_mb"]


class Supervisor:
    """Runs blocks in forked children; a dead child's later blocks run in a fresh one."""

    def __init__(self, settings: dict) -> None:
        self.s = settings
        # A result frame holds at most 1.5 x max_output_chars characters, JSON-escaped.
        self.ctrl_limit = 16 * settings["max_output_chars"] + 4096
        self.memory = MemoryWatch(settings, anon_kb("self"))
        self.zygote: Zygote | None = None
        self.status: int | None = -1  # the current child's wait status once ended (-1: none)
        self.stale = 0  # zygote reports still to come for children we stopped waiting for
        self.outbox = Outbox()
        self.next_check = 0.0

    def run(self, blocks: list[str], seed: int, emit) -> None:
        """Run one solution; `emit` gets each block's output as soon as it is known."""
        self.s["seed"] = seed
        done = 0
        while done < len(blocks):
            done += self.run_child(blocks[done:], done, emit)

    def run_child(self, blocks: list[str], first: int, emit) -> int:
        """One child from the zygote, fed these blocks over a pipe; kills it at the end."""
        pipes = [os.pipe() for _ in range(4)]  # data, ctrl, ack, code
        (data_r, data_w), (ctrl_r, ctrl_w), (ack_r, ack_w), (code_r, code_w) = pipes
        ends = (data_w, ctrl_w, ack_r, code_r)
        body = json.dumps(blocks).encode()
        os.set_blocking(code_w, False)  # what fits in the pipe goes before the child exists
        try:
            body = body[os.write(code_w, body) :]
        except BlockingIOError:
            pass
        os.set_blocking(code_w, True)
        try:
            pid = self.zygote.spawn(ends, first, self.s["seed"])
        finally:
            for fd in ends:
                os.close(fd)
        self.status = None
        try:
            send_code(code_w, body)
            return self.collect(pid, (data_r, ctrl_r, ack_w), first, len(blocks), emit)
        finally:
            for fd in (data_r, ctrl_r, ack_w):
                os.close(fd)
            self.kill_tree(pid)

    def collect(self, pid: int, fds: tuple[int, int, int], first: int, n: int, emit) -> int:
        """Pass on the child's per-block results, enforcing the per-block limits."""
        data_r, ctrl_r, ack_w = fds
        cap = Capture(self.s["max_output_chars"] * 4 + 64)
        ctrl = bytearray()
        count = 0
        deadline, reason = time.monotonic() + self.s["timeout"], "timeout"
        self.memory.start()
        with self.selector(pid, data_r, ctrl_r) as sel:
            while count < n:
                ready = self.wait(sel, deadline, reason)
                if "data" in ready and not drain(data_r, cap):
                    sel.unregister(data_r)
                exited = "exit" in ready
                if exited:
                    exited = self.read_report()
                if (exited or "ctrl" in ready) and ctrl_r in sel.get_map():
                    if not self.read_control(ctrl_r, ctrl):
                        sel.unregister(ctrl_r)
                        # No result can come any more: the process must end by itself now.
                        deadline, reason = min(deadline, time.monotonic() + 0.5), "protocol"
                for result in self.pop_results(ctrl, first + count + 1, ready):
                    if count == n:
                        ready.add("protocol")  # more results than blocks
                        break
                    emit(self.finish(data_r, cap, result))
                    count += 1
                    deadline, reason = time.monotonic() + self.s["timeout"], "timeout"
                    send_ack(ack_w)
                if len(ctrl) > self.ctrl_limit:
                    ready.add("protocol")
                stop = ready & {"timeout", "memory", "protocol"}
                if stop and count < n:
                    self.kill_tree(pid)
                    if exited and self.memory.killed():
                        stop = {"memory"}
                    emit(self.finish(data_r, cap, message(stop_message(stop.pop(), self.s))))
                    return count + 1
                if exited and count < n:
                    status = self.reap(pid)
                    oom = self.memory.killed()
                    text = stop_message("memory", self.s) if oom else death_message(status)
                    emit(self.finish(data_r, cap, message(text)))
                    return count + 1
        return count

    def wait(self, sel: selectors.BaseSelector, deadline: float, reason: str) -> set:
        """Names of the ready pipes, or the reason to stop the child ("timeout", "memory")."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                return {reason}
            if now >= self.next_check:  # on a clock, so a chatty child is checked too
                self.next_check = now + MEMORY_POLL
                if self.outbox.due():
                    self.outbox.flush()
                if self.memory.over():
                    return {"memory"}
            ready = sel.select(min(deadline, self.next_check) - now)
            if ready:
                return {key.data for key, _ in ready}

    def selector(self, pid: int, data_r: int, ctrl_r: int) -> selectors.BaseSelector:
        sel = selectors.DefaultSelector()
        for fd, name in ((data_r, "data"), (ctrl_r, "ctrl")):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, name)
        # The zygote reports the child's exit (after killing what it left), which must end the
        # wait even if the child's own children keep the pipes open.
        sel.register(self.zygote.sock, selectors.EVENT_READ, "exit")
        return sel

    def read_control(self, fd: int, buf: bytearray) -> bool:
        """Read buffered result frames; False once the child's end is closed."""
        while len(buf) <= self.ctrl_limit:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            buf += chunk
        return True

    def pop_results(self, buf: bytearray, number: int, ready: set) -> list[dict]:
        """Complete, valid result frames; anything else is a protocol break (in `ready`)."""
        results = []
        while len(buf) >= HEADER.size:
            (size,) = HEADER.unpack(buf[: HEADER.size])
            if size > self.ctrl_limit:
                ready.add("protocol")
                break
            if len(buf) < HEADER.size + size:
                break
            body = bytes(buf[HEADER.size : HEADER.size + size])
            del buf[: HEADER.size + size]
            try:
                value = json.loads(body)
            except Exception:  # noqa: BLE001 - garbage, or nesting deep enough to recurse out
                value = None
            if not valid_result(value, number + len(results)):
                ready.add("protocol")
                break
            results.append(value)
        return results

    def finish(self, data_r: int, cap: Capture, result: dict) -> str:
        drain(data_r, cap)
        out, dropped = cap.take()
        return compose(out, dropped, result, self.s["max_output_chars"])

    def read_report(self) -> bool:
        """Read one report of the zygote; True if it says the current child has ended (and
        everything it started is killed and reaped), False if it was about an earlier one."""
        status = self.zygote.reply()
        if self.stale:
            self.stale -= 1
            return False
        self.status = status
        return True

    def reap(self, pid: int) -> int | None:
        """The exit status of the ended child (-1 from the zygote: unknown)."""
        return self.status if self.status is not None and self.status >= 0 else None

    def kill_tree(self, pid: int) -> None:
        """Have the zygote kill the child and everything it started, without waiting: it does
        so before it starts the next child, and its report is read (and dropped) later."""
        if self.status is None:
            self.zygote.kill()
            self.status, self.stale = -1, self.stale + 1


def kill_and_reap(child: int, s: dict) -> int:
    """In the zygote: kill the child's whole tree, reap it all; the child's wait status."""
    status = -1
    kill_all(child, s)
    try:
        status = os.waitpid(child, 0)[1]
    except ChildProcessError:
        pass
    flags = 0 if s["pid1"] else os.WNOHANG  # unsandboxed: only our own children are ours
    while True:
        kill_all(child, s)  # again after each reap: nothing forked meanwhile may survive
        try:
            if os.waitpid(-1, flags)[0] == 0:
                return status
        except ChildProcessError:
            return status


def kill_all(child: int, s: dict) -> None:
    try:
        if s["pid1"]:
            # All of the sandbox but PID 1 and us: kill(-1) reaches even processes that left
            # the child's session, and as a subreaper we reap every one of them.
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(child, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def send_code(fd: int, body: bytes) -> None:
    """The rest of a child's code (JSON), then end of file."""
    try:
        while body:
            body = body[os.write(fd, body) :]
    except OSError:  # the child died first: noticed on its other pipes
        pass
    finally:
        os.close(fd)


class Zygote:
    """A process forked before any solution ran, which forks each child on request.

    Children start from its memory, which never held a solution's code or outputs, so nothing
    of an earlier solution can be read from a child's address space. The worker sends it only
    pipe ends and numbers; the child reads its code from its own pipe.
    """

    def __init__(self, s: dict) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self.sock.close()
                zygote_main(theirs, s)
            finally:
                os._exit(0)
        theirs.close()

    def spawn(self, fds: tuple[int, ...], first: int, seed: int) -> int:
        """Start a child; the zygote answers once, when it has ended (by itself or `kill`)."""
        socket.send_fds(self.sock, [b"s" + SPAWN.pack(first, seed)], list(fds))
        return 0

    def kill(self) -> None:
        """End the current child's whole tree (ignored if it has ended already)."""
        self.sock.sendall(b"k" + SPAWN.pack(0, 0))

    def reply(self) -> int:
        data = b""
        while len(data) < REPLY.size:
            chunk = self.sock.recv(REPLY.size - len(data))
            if not chunk:
                raise ZygoteDied("the zygote process is gone")
            data += chunk
        return REPLY.unpack(data)[0]


class ZygoteDied(RuntimeError):
    pass


SPAWN = struct.Struct("<qq")  # the first block's number, the seed
REPLY = struct.Struct("<q")  # a pid, or a wait status (-1: none)


def zygote_main(sock: socket.socket, s: dict) -> None:
    """Hand each request to a spare child; when it exits, or on "k", kill its tree, reap,
    report. The next spare is forked and isolated right after, outside any solution's time."""
    LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the child's orphans come back to us
    child, pidfd = 0, -1
    spare: Spare | None = Spare(s, sock)
    while True:
        if child:
            ready, _, _ = select.select([sock, pidfd], [], [])
            if pidfd in ready:  # it ended by itself: kill what it left, report its status
                sock.sendall(REPLY.pack(kill_and_reap(child, s)))
                os.close(pidfd)
                child, pidfd = 0, -1
                spare = Spare(s, sock)
                continue
        msg, fds, _, _ = socket.recv_fds(sock, 1 + SPAWN.size, 4)
        if len(msg) < 1 + SPAWN.size:
            return  # the worker is gone
        if msg[:1] == b"k":
            if child:  # else: the child's end was reported already; nothing to answer
                sock.sendall(REPLY.pack(kill_and_reap(child, s)))
                os.close(pidfd)
                child, pidfd = 0, -1
                spare = Spare(s, sock)
            continue
        if spare is None or not spare.start(msg[1:], fds):  # it died waiting: a new one, once
            spare = Spare(s, sock)
            spare.start(msg[1:], fds)
        for fd in fds:
            os.close(fd)
        child, spare = spare.pid, None
        pidfd = os.pidfd_open(child)


class Spare:
    """A child forked, with its namespaces and fresh /tmp, ahead of its request; `start` hands
    it its pipes."""

    def __init__(self, s: dict, worker: socket.socket) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self.sock.close()
                worker.close()
                spare_main(theirs, s)
            finally:
                os._exit(70)
        theirs.close()

    def start(self, numbers: bytes, fds: list[int]) -> bool:
        try:
            socket.send_fds(self.sock, [numbers], fds)
            return True
        except OSError:
            return False
        finally:
            self.sock.close()


def spare_main(sock: socket.socket, s: dict) -> None:
    """In a spare child: namespaces and mounts now, then wait for a request's pipes and
    numbers; the uid, limits and filter follow (idle, it stays the zygote's root copy)."""
    try:
        prepare(s)
    except OSError:
        os._exit(71)
    msg, fds, _, _ = socket.recv_fds(sock, SPAWN.size, 4)
    if len(msg) < SPAWN.size or len(fds) != 4:
        os._exit(0)
    sock.close()
    first, seed = SPAWN.unpack(msg)
    confine(s)
    child_start(fds, first, {**s, "seed": seed})


def child_start(fds: list[int], first: int, s: dict) -> None:
    """The new child reads its blocks, then runs them."""
    data_w, ctrl_w, ack_r, code_r = fds
    chunks = []
    while chunk := os.read(code_r, 1 << 16):
        chunks.append(chunk)
    os.close(code_r)
    blocks = json.loads(b"".join(chunks))
    set_limits(s, len(blocks))  # the CPU time limit, now that the number of blocks is known
    child_main(blocks, first, s, (data_w, ctrl_w, ack_r))


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


def probe(s: dict, key: str) -> bool:
    """Whether a child can set itself up with `key` alone (namespaces, filter allowed here)."""
    s = {**s, "private_mounts": None, "seccomp": None, key: s[key]}
    pid = os.fork()
    if pid == 0:
        try:
            isolate(s, 1)
            os._exit(0)
        finally:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def configure(settings: dict) -> None:
    """Fill in what the worker learns about its sandbox, once, and say what it falls back to."""
    workdir = settings["workdir"]
    settings["keep"] = python_entries(workdir)
    x86_64 = os.uname().machine == "x86_64"  # the filter's system call numbers are x86_64's
    settings["seccomp"] = seccomp_program() if settings["seccomp"] and x86_64 else None
    if settings["mpl_cache"]:
        settings["mpl_files"] = os.listdir(settings["mpl_cache"])
    for key in ("private_mounts", "seccomp"):
        if settings[key] and not probe(settings, key):
            settings[key] = None
            sys.stderr.write(f"scdpo sandbox worker: {key} unavailable here, not used\n")
    private = settings["private_mounts"] and os.path.isdir(MPL_CONFIG)
    mpl = MPL_CONFIG if private else os.path.join(workdir, ".matplotlib")
    os.environ.update(MPLCONFIGDIR=mpl, MPLBACKEND="Agg")


def main() -> None:
    settings = json.loads(sys.argv[1])
    harden_self()
    configure(settings)
    preimport(settings["preimport"])
    supervisor = Supervisor(settings)
    supervisor.zygote = Zygote(settings)  # after the imports, before any solution
    write_frame(1, {"ready": {k: bool(settings[k]) for k in ("private_mounts", "seccomp")}})
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


class Outbox:
    """Block outputs on their way to the pool: sent together at the end of a quick solution
    (one wake-up of the pool instead of one per block), or at the latest MEMORY_POLL after
    they were ready, so the pool's per-block deadline still sees progress."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.since = 0.0

    def add(self, obj) -> None:
        body = json.dumps(obj).encode()
        if not self.frames:
            self.since = time.monotonic()
        self.frames.append(HEADER.pack(len(body)) + body)

    def due(self) -> bool:
        return bool(self.frames) and time.monotonic() - self.since >= MEMORY_POLL

    def flush(self) -> None:
        data = b"".join(self.frames)
        self.frames = []
        while data:
            data = data[os.write(1, data) :]


if __name__ == "__main__":
    main()
