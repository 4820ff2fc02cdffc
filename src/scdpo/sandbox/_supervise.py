"""Sandbox worker, part 6 of 7: the supervisor of one child, from fork to reaping."""

import json
import os
import selectors
import time

from ._cells import HEADER, MEMORY_POLL
from ._watch import (
    Capture,
    MemoryWatch,
    Outbox,
    anon_kb,
    compose,
    death_message,
    drain,
    message,
    read_some,
    send_ack,
    stop_message,
    valid_result,
)
from ._zygote import Zygote, encode_blocks, send_code


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
        self.ended = True  # whether the current child's "k" went to the zygote
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
        body = encode_blocks(blocks)
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
        self.status, self.ended = None, False
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
                stop = ready & {"timeout", "memory", "sockets", "protocol"}
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
        """Names of the ready pipes, or the reason to stop the child ("timeout", "memory",
        "sockets")."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                return {reason}
            if now >= self.next_check:  # on a clock, so a chatty child is checked too
                self.next_check = now + MEMORY_POLL
                if self.outbox.due():
                    self.outbox.flush()
                over = self.memory.over()
                if over:
                    return {over}
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
        return read_some(fd, buf.extend, lambda: len(buf) > self.ctrl_limit)

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
        so before it starts the next child. It gets one "k" per child, ended or not, and sends
        one report per child; one not read yet is read (and dropped) later."""
        if not self.ended:
            self.zygote.kill()
            self.ended = True
        if self.status is None:
            self.status, self.stale = -1, self.stale + 1
