"""Sandbox worker, part 5 of 7: the zygote, a clean process started before any solution ran,
which forks every child (so no child inherits an earlier solution's memory)."""

import ctypes
import gc
import mmap
import os
import select
import signal
import socket
import struct

from ._cells import HEADER
from ._confine import LIBC, child_main, confine, prepare, set_limits

# What the zygote learns of a solution (its request, its processes' wait statuses) lives only
# in these buffers, zeroed after use: a child, a copy of the zygote's memory, finds no earlier
# solution's numbers in it, and its heap is the same at every fork (same addresses in cells).
SPAWN = struct.Struct("<qq")  # the first block's number, the seed
REPLY = struct.Struct("<q")  # a wait status (-1: none)
REQUEST = bytearray(1 + SPAWN.size)
NO_REQUEST = bytes(len(REQUEST))
STATUS = ctypes.c_int(0)
REPORT = ctypes.c_int64(0)


def reap(pid: int, flags: int) -> int:
    """waitpid with the status in STATUS (no Python object holds it): the pid, 0 or -1."""
    return LIBC.waitpid(pid, ctypes.byref(STATUS), flags)


def kill_and_reap(child: int, s: dict) -> None:
    """In the zygote: kill the child's whole tree, reap it all; the child's wait status goes
    to REPORT."""
    ctypes.memset(ctypes.byref(REPORT), 0xFF, 8)  # -1: unknown
    kill_all(child, s)
    if reap(child, 0) == child:
        ctypes.memset(ctypes.byref(REPORT), 0, 8)
        ctypes.memmove(ctypes.byref(REPORT), ctypes.byref(STATUS), 4)  # >= 0: little-endian
    flags = 0 if s["pid1"] else os.WNOHANG  # unsandboxed: only our own children are ours
    while True:
        kill_all(child, s)  # again after each reap: nothing forked meanwhile may survive
        if reap(-1, flags) <= 0:  # none left (-1: ECHILD; 0: none exited, unsandboxed)
            break
    ctypes.memset(ctypes.byref(STATUS), 0, 4)


def report(sock: socket.socket) -> None:
    sock.sendall(REPORT)
    ctypes.memset(ctypes.byref(REPORT), 0, 8)


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
    """The rest of a child's code (see `encode_blocks`), then end of file."""
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


def zygote_main(sock: socket.socket, s: dict) -> None:
    """Hand each request to a spare child; when it exits, or on "k", kill its tree, reap,
    report; once the worker's "k" is in too, fork the next spare (outside any solution's
    time). Every child takes the same steps in the same order, so the zygote's memory is the
    same at every fork, whichever came first."""
    LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the child's orphans come back to us
    gc.disable()  # no collection at a moment that depends on history (children turn it on)
    spare: Spare | None = Spare(s, sock)
    while True:
        fds = receive(sock)
        if fds is None:
            return  # the worker is gone
        if REQUEST[0] != ord("s"):  # a "k" with no child: nothing to end
            continue
        if spare is None or not spare.start(fds):  # it died waiting: a new one, once
            spare = Spare(s, sock)
            spare.start(fds)
        REQUEST[:] = NO_REQUEST
        for fd in fds:
            os.close(fd)
        child, spare, fds = spare.pid, None, None
        if not see_to_end(sock, child, s):
            return
        spare = Spare(s, sock)


def see_to_end(sock: socket.socket, child: int, s: dict) -> bool:
    """Wait for the child's exit or the worker's "k", kill and reap its whole tree, report
    its status, and have the "k"; False if the worker is gone."""
    pidfd = os.pidfd_open(child)
    stopped = sock in select.select([sock, pidfd], [], [])[0]
    present = receive(sock) is not None if stopped else True
    kill_and_reap(child, s)
    os.close(pidfd)
    if present:
        report(sock)
        if not stopped:
            present = receive(sock) is not None  # the worker's "k", sent for every child
    REQUEST[:] = NO_REQUEST
    return present


def receive(sock: socket.socket) -> list[int] | None:
    """The worker's next request into REQUEST, and the pipe ends it came with."""
    size, ancillary, _, _ = sock.recvmsg_into([REQUEST], socket.CMSG_SPACE(4 * 4))
    if size < len(REQUEST):
        return None
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4])
    return fds


LAST_PID = b"99"  # each child is pid 100 of the worker's namespace, its processes 101, ...


def reset_pids(s: dict) -> None:
    """Make the next pid the same for every child: the previous child's processes are all
    reaped, so pids from LAST_PID + 1 on are free (the pid namespace's own counter, reset)."""
    if s["last_pid_fd"] is not None:
        try:
            os.pwrite(s["last_pid_fd"], LAST_PID, 0)
        except OSError:
            pass


class Spare:
    """A child forked, with its namespaces and fresh /tmp, ahead of its request; `start` hands
    it its pipes."""

    def __init__(self, s: dict, worker: socket.socket) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        reset_pids(s)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                self.sock.close()
                worker.close()
                if s["last_pid_fd"] is not None:
                    os.close(s["last_pid_fd"])
                spare_main(theirs, s)
            finally:
                os._exit(70)
        theirs.close()

    def start(self, fds: list[int]) -> bool:
        """Hand it the request in REQUEST and its pipe ends."""
        try:
            with memoryview(REQUEST) as request:
                socket.send_fds(self.sock, [request[1:]], fds)
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


CODE_BUFFER = 8 << 20  # bytes of code a child reads into one mapping of this fixed size


def child_start(fds: list[int], first: int, s: dict) -> None:
    """The new child reads its blocks, then runs them."""
    data_w, ctrl_w, ack_r, code_r = fds
    code = read_code(code_r)
    os.close(code_r)
    n = sum(1 for _ in blocks(code))
    set_limits(s, n)  # the CPU time limit, now that the number of blocks is known
    child_main(blocks(code), n, first, s, (data_w, ctrl_w, ack_r))


def encode_blocks(blocks: list[str]) -> bytes:
    """A solution's code as the child reads it: each block's UTF-8, length-prefixed."""
    encoded = [b.encode("utf-8", "surrogatepass") for b in blocks]
    return b"".join(HEADER.pack(len(b)) + b for b in encoded)


def read_code(fd: int) -> memoryview:
    """All of the code pipe, in a mapping of a fixed size, off the Python heap: what a block
    allocates, and so the addresses it sees, do not depend on the blocks after it."""
    buf, size = mmap.mmap(-1, CODE_BUFFER), 0
    while True:
        if size == len(buf):  # absurdly long code: a bigger mapping (layouts may differ then)
            bigger = mmap.mmap(-1, 2 * len(buf))
            bigger[:size] = buf[:size]
            buf = bigger
        with memoryview(buf) as view:
            got = os.readv(fd, [view[size:]])
        if not got:
            return memoryview(buf)[:size]
        size += got


def blocks(code: memoryview):
    """Each block's source, decoded only when it is its turn."""
    at = 0
    while at + HEADER.size <= len(code):
        (size,) = HEADER.unpack_from(code, at)
        yield str(code[at + HEADER.size : at + HEADER.size + size], "utf-8", "surrogatepass")
        at += HEADER.size + size
