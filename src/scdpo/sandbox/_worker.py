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
import fcntl
import gc
import io
import json
import linecache
import os
import resource
import selectors
import shutil
import signal
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


def run_cell(src: str, ns: dict, number: int) -> str:
    """Execute one block in `ns`; return the displayed value or the error text."""
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    try:
        tree = compile(src, filename, "exec", PARSE_FLAGS, dont_inherit=True)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), ns)
        if last is None:
            return ""
        value = eval(compile(last, filename, "eval"), ns)
        if value is None or is_quiet(src):
            return ""
        ns["_"] = value
        return format_value(value)
    except BaseException as exc:  # noqa: B036 - SystemExit/KeyboardInterrupt are cell errors too
        return format_error(exc)


# ---------------------------------------------------------------- child: process setup


def drop_privileges(uid: int | None) -> None:
    """Become an unprivileged uid: no capabilities, and RLIMIT_NPROC applies (not to uid 0)."""
    if uid is None:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def set_limits(s: dict, n_blocks: int) -> None:
    mb = 1 << 20
    cpu = int(s["timeout"] * n_blocks) + 2
    limits = {
        resource.RLIMIT_AS: s["memory_mb"] * mb,
        resource.RLIMIT_NPROC: s["max_processes"],
        resource.RLIMIT_FSIZE: s["fsize_mb"] * mb,
        resource.RLIMIT_CPU: cpu,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: 256,
    }
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
    """Remove what an earlier solution left in the private temp dir, except `keep`.

    `keep` is the read-only venv's path when it lives under /tmp (in directories only root may
    write): every solution would otherwise walk the whole venv failing to delete it.
    """
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


def child_main(blocks: list[str], first: int, s: dict, fds: tuple[int, int, int]) -> None:
    """Runs in the forked child: isolate, run the cells, report each result, exit."""
    os.setsid()  # own process group, so the unsandboxed mode can still kill the whole tree
    drop_privileges(s["uid"])
    set_limits(s, len(blocks))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Move the pipes above the target numbers first, so no dup2 overwrites one of them.
    data_w, ctrl_w, ack_r = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in fds)
    for source, target in ((data_w, 1), (data_w, 2), (ctrl_w, CONTROL_FD), (ack_r, ACK_FD)):
        os.dup2(source, target)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.closerange(ACK_FD + 1, 1 << 16)  # the worker's pipes must not leak into user code
    os.chdir(s["workdir"])
    clean_workdir(s["workdir"], s["keep"])
    out = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    ns = {"__name__": "__main__", "__builtins__": builtins}
    me = os.getpid()
    for number, src in enumerate(blocks, first + 1):
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(), out, out
        result = run_cell(src, ns, number)
        flush(sys.stdout, out)
        if os.getpid() != me:  # a process the cell forked must not go on to run later cells
            os._exit(0)
        write_frame(CONTROL_FD, result[: s["max_output_chars"] + 1])
        if number < first + len(blocks) and not os.read(ACK_FD, 1):
            break
    os._exit(0)


def flush(*streams) -> None:
    for stream in streams:
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - user code may have replaced or closed it
            pass


# ---------------------------------------------------------------- worker: supervise one child


class Capture:
    """Keeps at most `cap` bytes of a block's output, counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.dropped = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def take(self) -> tuple[str, int]:
        text, dropped = self.data.decode("utf-8", "replace"), self.dropped
        self.data, self.dropped = bytearray(), 0
        return text, dropped


def truncate(text: str, limit: int, dropped: int = 0) -> str:
    if len(text) <= limit and not dropped:
        return text
    extra = len(text) - limit + dropped
    return text[:limit] + f"\n... [output truncated: {extra} more characters]"


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


def death_message(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        return f"RuntimeError: the code's process was killed by {sig}; its state was lost"
    code = os.waitstatus_to_exitcode(status)
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

    RLIMIT_AS caps each process; this caps their sum, which 64 forked processes could
    otherwise multiply. Only meaningful as PID 1, where /proc lists just the sandbox.
    """
    pids = [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]
    return sum(max(anon_kb(p) - baseline_kb, 0) for p in pids) / 1024


class Supervisor:
    """Runs blocks in forked children; a dead child's later blocks run in a fresh one."""

    def __init__(self, settings: dict) -> None:
        self.s = settings
        # A result frame holds at most max_output_chars + 1 characters, JSON-escaped.
        self.ctrl_limit = 16 * settings["max_output_chars"] + 4096
        self.baseline_kb = anon_kb("self")

    def run(self, blocks: list[str]) -> list[str]:
        outputs: list[str] = []
        while len(outputs) < len(blocks):
            outputs += self.run_child(blocks[len(outputs) :], len(outputs))
        return outputs

    def run_child(self, blocks: list[str], first: int) -> list[str]:
        data_r, data_w = os.pipe()
        ctrl_r, ctrl_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (data_r, ctrl_r, ack_w):
                    os.close(fd)
                child_main(blocks, first, self.s, (data_w, ctrl_w, ack_r))
            finally:
                os._exit(70)
        for fd in (data_w, ctrl_w, ack_r):
            os.close(fd)
        try:
            return self.collect(pid, (data_r, ctrl_r, ack_w), len(blocks))
        finally:
            for fd in (data_r, ctrl_r, ack_w):
                os.close(fd)
            self.kill_tree(pid)

    def collect(self, pid: int, fds: tuple[int, int, int], n: int) -> list[str]:
        """Gather the child's per-block results, enforcing the per-block limits."""
        data_r, ctrl_r, ack_w = fds
        cap = Capture(self.s["max_output_chars"] * 4 + 64)
        ctrl = bytearray()
        outputs: list[str] = []
        deadline = time.monotonic() + self.s["timeout"]
        with self.selector(pid, data_r, ctrl_r) as sel:
            while len(outputs) < n:
                ready = self.wait(sel, deadline)
                if "data" in ready and not drain(data_r, cap):
                    sel.unregister(data_r)
                ended = "exit" in ready
                if ended or "ctrl" in ready:
                    ended |= not self.read_control(ctrl_r, ctrl)
                    if len(ctrl) > self.ctrl_limit:
                        ready.add("protocol")
                stop = ready & {"timeout", "memory", "protocol"}
                if stop:
                    self.kill_tree(pid)
                    return [*outputs, self.finish(data_r, cap, stop_message(stop.pop(), self.s))]
                for result in self.pop_results(ctrl):
                    outputs.append(self.finish(data_r, cap, result))
                    deadline = time.monotonic() + self.s["timeout"]
                    send_ack(ack_w)
                if ended and len(outputs) < n:
                    status = self.reap(pid)
                    return [*outputs, self.finish(data_r, cap, death_message(status))]
        return outputs

    def wait(self, sel: selectors.BaseSelector, deadline: float) -> set[str]:
        """Names of the ready pipes, or the reason to stop the child ("timeout", "memory")."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"timeout"}
            poll = min(left, MEMORY_POLL) if self.s["pid1"] else left
            ready = sel.select(poll)
            if ready:
                return {key.data for key, _ in ready}
            if self.s["pid1"] and tree_memory_mb(self.baseline_kb) > self.s["memory_mb"]:
                return {"memory"}

    @staticmethod
    def selector(pid: int, data_r: int, ctrl_r: int) -> selectors.BaseSelector:
        sel = selectors.DefaultSelector()
        for fd, name in ((data_r, "data"), (ctrl_r, "ctrl")):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, name)
        if hasattr(os, "pidfd_open"):
            # The child's exit must end the wait even if its own children keep the pipes open.
            pidfd = os.pidfd_open(pid)
            sel.register(pidfd, selectors.EVENT_READ, "exit")
            real_close = sel.close

            def close() -> None:
                real_close()
                os.close(pidfd)

            sel.close = close
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

    @staticmethod
    def pop_results(buf: bytearray) -> list[str]:
        results = []
        while len(buf) >= HEADER.size:
            (size,) = HEADER.unpack(buf[: HEADER.size])
            if len(buf) < HEADER.size + size:
                break
            body = bytes(buf[HEADER.size : HEADER.size + size])
            del buf[: HEADER.size + size]
            try:
                value = json.loads(body)
            except ValueError:
                value = None
            results.append(value if isinstance(value, str) else "")
        return results

    def finish(self, data_r: int, cap: Capture, tail: str) -> str:
        drain(data_r, cap)
        text, dropped = cap.take()
        return truncate(text + tail, self.s["max_output_chars"], dropped)

    @staticmethod
    def reap(pid: int) -> int | None:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return None

    def kill_tree(self, pid: int) -> None:
        """Kill the child and everything it started, then reap them."""
        if self.s["pid1"]:
            # As PID 1 of the sandbox's PID namespace every leftover is ours to reap; kill(-1)
            # reaches even processes that left the child's session.
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    return
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.reap(pid)


# ---------------------------------------------------------------- worker main loop


def harden_self() -> None:
    """Keep children from signalling (SIGINT) or ptrace-ing the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    except (OSError, AttributeError, ImportError):
        pass


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


def main() -> None:
    settings = json.loads(sys.argv[1])
    settings["keep"] = python_entries(settings["workdir"])  # once, not per solution
    harden_self()
    preimport(settings["preimport"])
    supervisor = Supervisor(settings)
    write_frame(1, "ready")
    while True:
        request = read_frame(0)
        if request is None:
            return
        write_frame(1, supervisor.run([str(b) for b in request]))


if __name__ == "__main__":
    main()
