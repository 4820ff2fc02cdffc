"""The grading zygote: imports and warms math-verify once, then forks one child per request.

Started by `scdpo.grading._pool` with a control socket as its stdin. It writes `ready` when
warm; each request is one byte with a socket attached (SCM_RIGHTS), on which a forked child
serves whole verdicts (`compare.decide` with math-verify): a JSON line `[answer, reference]` in,
`1`/`0` out. The zygote answers each request with the child's pid. The parent enforces the time
limit by killing the child, so math-verify's own signal-based timeouts are off. The zygote exits
when the control socket closes, and its children die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys

# One of each kind of comparison: a first use of each path costs 0.1-0.6 s, not a verdict's.
_WARM_UP = [
    ("1", "1"),
    ("1+x", "x+1"),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("x^2-1", "(x-1)(x+1)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[2,\\infty)", "x\\ge2"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\sin^2x+\\cos^2x", "1"),
]
_PR_SET_PDEATHSIG = 1


def serve(channel: socket.socket) -> None:
    """A child's loop: verdicts on `channel` until the parent closes it."""
    from scdpo.grading.compare import decide
    from scdpo.grading.symbolic import verify_in_process

    with channel, channel.makefile("rb") as requests:
        for line in requests:
            answer, reference = json.loads(line)
            try:
                equal = decide(answer, reference, verify_in_process)
            except Exception:  # noqa: BLE001 - a verdict must never kill the child
                equal = False
            channel.sendall(b"1\n" if equal else b"0\n")


def fork_child(control: socket.socket, channel_fd: int) -> int:
    pid = os.fork()
    if pid == 0:
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the zygote died before prctl: nobody would kill this child
            os._exit(0)
        try:
            serve(socket.socket(fileno=channel_fd))
        finally:
            os._exit(0)
    os.close(channel_fd)
    return pid


def main() -> None:
    # Anything sympy prints goes to stderr; stdout is not a channel here.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.CRITICAL)
    control = socket.socket(fileno=os.dup(0))
    os.close(0)

    from scdpo.grading.compare import decide  # noqa: F401 - imported once, before any fork
    from scdpo.grading.symbolic import verify_in_process

    for gold, pred in _WARM_UP:  # sympy's lazily imported paths, before announcing readiness
        verify_in_process(gold, pred)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps killed children
    control.sendall(b"ready\n")
    while True:
        message, fds, _, _ = socket.recv_fds(control, 16, 1)
        if not message:
            return
        if fds:
            control.sendall(f"{fork_child(control, fds[0])}\n".encode())


if __name__ == "__main__":
    main()
