"""Sandbox worker, part 4 of 7: what the worker reads off a child and sends on: captured output,
result frames, exit and stop messages, memory, the outbox."""

import json
import os
import signal
import time

from ._cells import HEADER, MEMORY_POLL, PAGE_KB

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
    out and, for an error, its final line.

    Built here from bounded fields whatever the child sent: its text is cut to `limit`, its
    error line (which starts at `at` in the result) to `limit // 2` characters, shown as one
    line, so that what follows the note always starts with the exception's name.
    """
    text = result["text"][:limit]
    n = max(result["n"], len(text))
    total = len(out) + dropped + n
    if total <= limit:
        return out + text
    last = clip_line(result["last"], limit // 2)
    shown = one_line(last)
    keep = max(limit - len(shown), 0)
    if last:  # the head stops where the error line starts: nothing is shown twice
        keep = min(keep, len(out) + dropped + min(result["at"], n))
    head = out[:keep] if dropped else (out + text)[:keep]
    note = f"\n... [output truncated: {max(total - len(head) - len(last), 0)} more characters]"
    return head + note + (f"\n{shown}" if shown else "")


def one_line(text: str) -> str:
    """An error line that stays one line: line breaks in the message are shown as \\n."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def clip_line(text: str, most: int) -> str:
    """The longest head of `text` whose one-line form has at most `most` characters."""
    text = text[:most]
    while len(one_line(text)) > most:
        text = text[: most - (len(one_line(text)) - len(text))]
    return text


def message(text: str) -> dict:
    """A result the worker itself gives (timeout, memory, a dead process): an error line."""
    return {"text": text, "n": len(text), "last": text, "at": 0}


def valid_result(value: object, number: int) -> bool:
    return (
        isinstance(value, dict)
        and value.get("i") == number
        and isinstance(value.get("text"), str)
        and isinstance(value.get("last"), str)
        and isinstance(value.get("n"), int)
        and isinstance(value.get("at"), int)
        and 0 <= value["at"] <= value["n"]
        and value["n"] >= len(value["text"])
    )


def read_some(fd: int, add, full) -> bool:
    """Read what a non-blocking pipe holds into `add` until `full()`; False at end of file."""
    while not full():
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        add(chunk)
    return True


def drain(fd: int, cap: Capture) -> bool:
    """Read what is buffered in a non-blocking pipe; False at end of file.

    Bounded (64 reads), so a process that writes without pause cannot keep the worker here.
    """
    reads = iter(range(64))
    return read_some(fd, cap.add, lambda: next(reads, None) is None)


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
    if reason == "sockets":
        return (
            f"MemoryError: the code's sockets held more than {s['socket_mb']} MB of buffers"
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
    (everything: shared memory, tmpfs files, kernel memory, socket buffers), else from /proc
    (anonymous memory only)."""

    def __init__(self, s: dict, baseline_kb: int) -> None:
        self.s, self.baseline_kb = s, baseline_kb
        self.events, self.current, sockets = s["memcg"] or (None, None, None)
        # v1 counts socket buffers apart (and caps them); v2 counts them in `current`, and
        # memory.stat says how much of it they are.
        self.stat = sockets if sockets and sockets.endswith("memory.stat") else None
        self.sockets = None if self.stat else sockets
        self.socket_bytes = s.get("socket_mb", 64) << 20
        self.start_kills = self.start_bytes = 0

    def start(self) -> None:
        if self.events:
            self.start_kills = read_counter(self.events, "oom_kill")
            self.start_bytes = self.usage()

    def usage(self) -> int:
        used = read_counter(self.current)
        return used + read_counter(self.sockets) if self.sockets else used

    def killed(self) -> bool:
        """Whether the kernel's OOM killer struck since `start`."""
        return bool(self.events) and read_counter(self.events, "oom_kill") > self.start_kills

    def over(self) -> str | None:
        """Why the solution must stop ("memory", "sockets"), or None."""
        if self.events:
            used = self.usage() - self.start_bytes
            if self.killed() or used > self.s["memory_mb"] << 20:
                return "memory"
            # v2 only: memory.stat is long, so it is read only once the total could be over.
            if self.stat and used > self.socket_bytes:
                if read_counter(self.stat, "sock") > self.socket_bytes:
                    return "sockets"
            return None
        if self.s["pid1"] and tree_memory_mb(self.baseline_kb) > self.s["memory_mb"]:
            return "memory"
        return None


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
