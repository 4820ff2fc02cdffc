"""The sandbox worker: runs inside bwrap, forks one fresh child per solution.

Standard library only: the pool starts it as `python -I -B -c <this source> <settings json>`, so
nothing of the project needs to be visible inside the sandbox. It talks to the pool over its
stdin/stdout with length-prefixed JSON frames: a request is a list of code blocks, the reply the
list of their outputs. Each child runs the blocks like notebook cells (shared namespace; stdout,
stderr and the repr of a final expression; Jupyter-style tracebacks), while the worker enforces
the per-block timeout, caps the output it keeps and kills the child's whole process tree.
"""

import builtins
import gc
import io
import json
import linecache
import os
import signal
import sys

from ._cells import read_frame, run_cell, write_frame
from ._confine import LIBC, MPL_CONFIG, isolate, python_entries, seccomp_program
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


if __name__ == "__main__":
    main()
