"""Sandbox worker, part 5 of 7: the zygote, a clean process started before any solution ran,
which forks every child (so no child inherits an earlier solution's memory)."""

import json
import os
import select
import signal
import socket
import struct

from ._confine import LIBC, child_main, confine, prepare, set_limits


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
