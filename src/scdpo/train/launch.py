"""Start the training CLI under `accelerate launch` with a rendezvous port of its own.

accelerate's default port is 29500 for every job, so two multi-GPU jobs on one node collide (the
second fails with "port in use" or, worse, joins the first one's rendezvous). The rule starts the
CLI with plain `python ... --launcher '<launch line>'`; the CLI picks a free port and replaces
itself with `<launch line> --main_process_port <port> <this script> <same arguments>`.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys

log = logging.getLogger(__name__)

# Set by torchrun in the processes it starts, or by relaunch itself (a launcher that starts one
# plain process, such as `accelerate launch --cpu`, sets nothing and must not loop).
_LAUNCHED = ("LOCAL_RANK", "RANK", "SCDPO_TRAIN_LAUNCHED")


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick: concurrent jobs get distinct ones)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_launched() -> bool:
    return any(name in os.environ for name in _LAUNCHED)


def launch_command(launcher: str, script: str, argv: list[str], port: int) -> list[str] | None:
    """The command that runs `script argv` under `launcher`; None when it runs in this process."""
    words = shlex.split(launcher)
    if not words or words == ["python"] or os.path.basename(words[0]).startswith("python"):
        return None
    if words[:2] == ["accelerate", "launch"]:
        # This interpreter's accelerate, whatever PATH says (conda env vs. submitting venv).
        words = [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
        if "--main_process_port" not in words:
            words += ["--main_process_port", str(port)]
    return [*words, script, *argv]


def relaunch(launcher: str, argv: list[str]) -> None:
    """Replace this process by the launcher running this CLI, unless already launched."""
    if is_launched():
        return
    command = launch_command(launcher, sys.argv[0], argv, free_port())
    if command is None:
        return
    log.info("launching: %s", shlex.join(command))
    sys.stderr.flush()
    os.environ["SCDPO_TRAIN_LAUNCHED"] = "1"
    os.execvp(command[0], command)
