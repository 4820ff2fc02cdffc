"""Start the training CLI under `accelerate launch` with a rendezvous port of its own.

accelerate's default port is 29500 for every job, so two multi-GPU jobs on one node collide (the
second fails with "port in use" or, worse, joins the first one's rendezvous). The rule starts the
CLI with plain `python ... --launcher '<launch line>'`; the CLI picks a free port and replaces
itself with `<launch line> --main_process_port <port> <this script> <same arguments>`.

A SLURM job on several nodes (the recipe's `nodes`, docs/slurm.md "Several nodes"): the CLI, on
the job's first node, starts itself once per node with `srun`; each of those starts accelerate
for its node (`--num_machines`, `--machine_rank` = the node's index, the first node's address and
a port every node derives from the job id).
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


_NODE_TASK = "SCDPO_NODE_TASK"  # set in the per-node tasks srun starts


def is_launched() -> bool:
    return any(name in os.environ for name in _LAUNCHED)


def _is_python(words: list[str]) -> bool:
    return not words or words == ["python"] or os.path.basename(words[0]).startswith("python")


def launch_command(
    launcher: str, script: str, argv: list[str], port: int, machine: list[str] = ()
) -> list[str] | None:
    """The command that runs `script argv` under `launcher`; None when it runs in this process.
    `machine`: accelerate's options for one node of several (machine_options)."""
    words = shlex.split(launcher)
    if _is_python(words):
        return None
    if words[:2] == ["accelerate", "launch"]:
        # This interpreter's accelerate, whatever PATH says (conda env vs. submitting venv).
        words = [sys.executable, "-m", "accelerate.commands.launch", *words[2:], *machine]
        if "--main_process_port" not in words:
            words += ["--main_process_port", str(port)]
    return [*words, script, *argv]


def job_nodes(env: dict[str, str] | None = None) -> int:
    """Nodes of the SLURM job this runs in (1 outside SLURM)."""
    return int((os.environ if env is None else env).get("SLURM_JOB_NUM_NODES", "1"))


def spread_command(script: str, argv: list[str], nodes: int) -> list[str]:
    """One task per node, each running this CLI again with the same arguments."""
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--overlap",  # share the resources the job step around the rule's shell holds
        "--kill-on-bad-exit=1",  # one node failing stops the others
        sys.executable,
        script,
        *argv,
    ]


def machine_options(env: dict[str, str], gpus_per_node: int) -> list[str]:
    """accelerate's options for this node of a multi-node job, from srun's task environment.
    Every node computes the same port (from the job id): they cannot agree on a free one."""
    nodes = job_nodes(env)
    return [
        "--num_machines",
        str(nodes),
        "--num_processes",
        str(nodes * gpus_per_node),
        "--machine_rank",
        env["SLURM_NODEID"],
        "--main_process_ip",
        env["SLURM_LAUNCH_NODE_IPADDR"],  # the first node, where the job's shell runs srun
        "--main_process_port",
        str(20000 + int(env["SLURM_JOB_ID"]) % 20000),
    ]


def _gpus_on_node() -> int:
    import torch

    return int(os.environ.get("SLURM_GPUS_ON_NODE") or torch.cuda.device_count() or 1)


def _replace_process(command: list[str], marker: str) -> None:
    log.info("launching: %s", shlex.join(command))
    sys.stderr.flush()
    os.environ[marker] = "1"
    os.execvp(command[0], command)


def relaunch(launcher: str, argv: list[str]) -> None:
    """Replace this process by the launcher running this CLI, unless already launched."""
    if is_launched():
        return
    nodes = job_nodes()
    if nodes > 1:
        if _is_python(shlex.split(launcher)):
            raise SystemExit(
                f"{nodes} nodes need an `accelerate launch` launcher, not {launcher!r}"
            )
        if _NODE_TASK not in os.environ:
            _replace_process(spread_command(sys.argv[0], argv, nodes), _NODE_TASK)
        machine = machine_options(dict(os.environ), _gpus_on_node())
        command = launch_command(launcher, sys.argv[0], argv, 0, machine)
    else:
        command = launch_command(launcher, sys.argv[0], argv, free_port())
    if command is None:
        return
    _replace_process(command, "SCDPO_TRAIN_LAUNCHED")
