"""The cgroups that hold one sandbox worker: memory, CPU and process count, v1 or v2.

RLIMIT_AS caps one process's address space; a memory cgroup also counts shared memory, tmpfs
files, page tables and kernel memory of every process in it, and (v1: only once a TCP limit is
set; v2: always) socket buffers. A cpu cgroup gives each worker one share and at most
`CPU_QUOTA` CPUs, however many processes its solution starts; a pids cgroup caps its tasks
whatever their uid. Needs a writable cgroup hierarchy (v2, or v1 as on these machines): usually
root. A missing controller is left out and logged (see docs/sandbox.md).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("scdpo.sandbox")
_names = itertools.count()
CONTROLLERS = ("memory", "cpu", "pids")
SOCKET_MB = 64  # socket buffers one worker's solution may hold: far below the host's tcp_mem
CPU_QUOTA = 1.0  # CPUs one worker (and everything its solution starts) may use at most
CPU_PERIOD_US = 100_000


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of each cgroup hierarchy."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], set(fields[sep + 3].split(","))
        if fstype in ("cgroup", "cgroup2"):
            found.append((fields[4], fstype, options))
    return found


def _own_path(controller: str) -> str | None:
    """This process's cgroup in the hierarchy of `controller` ("" for v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "") or controller in names.split(","):
            return path
    return None


def _remove_stale(base: Path) -> None:
    """Remove the empty cgroups of pools whose process is gone (killed before closing them), and
    this process's own that outlived their removal."""
    _remove_lingering()
    for path in base.glob("scdpo-*-*-*"):
        pid = path.name.split("-")[-2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                path.rmdir()
            except OSError:
                pass


def hierarchy(controller: str) -> tuple[Path, int] | None:
    """Where this process's cgroup for `controller` is, and the cgroup version, if writable."""
    for mount, fstype, options in _mounts():
        if fstype == "cgroup" and controller in options:
            own = _own_path(controller)
            if own is not None:
                return Path(mount + own.rstrip("/")), 1
        elif fstype == "cgroup2":
            base = Path(mount + (_own_path("") or "/").rstrip("/"))
            ctl = base / "cgroup.subtree_control"
            if ctl.exists() and controller in ctl.read_text().split():
                return base, 2
    return None


def limit_files(controller: str, version: int, settings: dict[str, int]) -> list[tuple]:
    """(file, value, required) that set a controller's limits, in the order they are written."""
    if controller == "memory":
        if version == 2:
            return [("memory.max", settings["memory"], True), ("memory.swap.max", 0, False)]
        # v1 counts socket buffers only once a TCP limit is set, and then apart from the rest.
        return [
            ("memory.limit_in_bytes", settings["memory"], True),
            ("memory.kmem.tcp.limit_in_bytes", SOCKET_MB << 20, False),
        ]
    if controller == "cpu":
        quota = int(CPU_QUOTA * CPU_PERIOD_US)
        if version == 2:
            return [("cpu.max", f"{quota} {CPU_PERIOD_US}", True)]
        return [("cpu.cfs_period_us", CPU_PERIOD_US, True), ("cpu.cfs_quota_us", quota, True)]
    return [("pids.max", settings["pids"], True)]


class MemoryCgroup:
    """The memory part of a worker's cgroups: its files, as the worker and the pool read them."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version
        self.limit_file = "memory.max" if version == 2 else "memory.limit_in_bytes"
        # v1's oom_control and v2's events both have an `oom_kill N` line.
        self.events = "memory.events" if version == 2 else "memory.oom_control"
        self.current = "memory.current" if version == 2 else "memory.usage_in_bytes"
        # Socket buffers: v1 counts them apart (and caps them at SOCKET_MB); v2 in `current`,
        # and per kind in memory.stat, where the worker checks them against SOCKET_MB.
        self.sockets = "memory.kmem.tcp.usage_in_bytes" if version == 1 else "memory.stat"

    @classmethod
    def create(cls, tag: str, limit_mb: int) -> MemoryCgroup | None:
        """A memory cgroup alone (probes and tests); workers get theirs from WorkerCgroups."""
        group = WorkerCgroups.create(tag, limit_mb, 64, ("memory",))
        return group.memory if group is not None else None

    def set_limit(self, limit: int) -> None:
        (self.path / self.limit_file).write_text(str(limit))
        swap = self.path / "memory.memsw.limit_in_bytes"  # v1 with swap accounting
        if self.version == 1 and swap.exists():
            try:
                swap.write_text(str(limit))
            except OSError:
                pass

    def usage(self) -> int:
        return int((self.path / self.current).read_text())

    def files(self, where: str) -> list[str]:
        """The files the worker reads, as seen from `where` (the cgroup directory's mount)."""
        return [f"{where}/{f}" for f in (self.events, self.current, self.sockets)]

    def remove(self) -> None:
        _rmdir(self.path)


_lingering: set[Path] = set()  # cgroups whose processes outlived _rmdir's wait: retried later


def _remove_lingering() -> None:
    for path in list(_lingering):
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        _lingering.discard(path)


atexit.register(_remove_lingering)


def _rmdir(path: Path) -> None:
    """Remove a cgroup directory once its processes are gone (they die with the worker); if they
    take longer (a loaded machine, many processes), retry at the next cgroup made."""
    for _ in range(50):
        try:
            path.rmdir()
            _lingering.discard(path)
            return
        except FileNotFoundError:
            _lingering.discard(path)
            return
        except OSError:
            time.sleep(0.02)
    _lingering.add(path)
    log.info("the sandbox's cgroup %s still holds processes; removed later", path)


class WorkerCgroups:
    """One directory per cgroup hierarchy (v1: one per controller; v2: one for all), each with
    its controllers' limits; the worker is moved into all of them by `wrap`."""

    def __init__(self, dirs: list[Path], memory: MemoryCgroup | None, missing: list[str]) -> None:
        self.dirs, self.memory, self.missing = dirs, memory, missing

    @classmethod
    def create(
        cls, tag: str, memory_mb: int, pids: int, controllers: tuple[str, ...] = CONTROLLERS
    ) -> WorkerCgroups | None:
        """Cgroups with every controller that can be had; None if none could be made."""
        settings = {"memory": memory_mb << 20, "pids": pids}
        made: dict[Path, Path] = {}  # hierarchy -> our new directory in it
        used: set[Path] = set()  # those directories that got at least one controller's limits
        memory, missing = None, []
        for controller in controllers:
            found = hierarchy(controller)
            path = _directory(found[0], tag, made) if found else None
            lacking = _write(path, limit_files(controller, found[1], {**settings})) if path else []
            if path is None or lacking is None:
                missing.append(controller)
                continue
            used.add(path)
            missing += [f"{controller} ({name})" for name in lacking]
            if controller == "memory":
                memory = MemoryCgroup(path, found[1])
        for path in set(made.values()) - used:
            _rmdir(path)
        return cls(sorted(used), memory, missing) if used else None

    def wrap(self, argv: list[str]) -> list[str]:
        """Run `argv` inside these cgroups: a shell joins each of them, then execs the command."""
        script = (
            'n=$0; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 1; shift; n=$((n - 1)); done;'
            ' exec "$@"'
        )
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        return ["/bin/sh", "-c", script, str(len(procs)), *procs, *argv]

    def remove(self) -> None:
        for path in self.dirs:
            _rmdir(path)


def _directory(base: Path, tag: str, made: dict[Path, Path]) -> Path | None:
    if base not in made:
        _remove_stale(base)
        path = base / f"scdpo-{tag}-{os.getpid()}-{next(_names)}"
        try:
            path.mkdir()
        except OSError:
            return None
        made[base] = path
    return made[base]


def _write(path: Path, files: list[tuple]) -> list[str] | None:
    """Write the limits; None if a required one failed, else the optional ones that did."""
    lacking = []
    for name, value, required in files:
        try:
            (path / name).write_text(str(value))
        except OSError as exc:
            log.debug("cannot set %s/%s: %s", path, name, exc)
            if required:
                return None
            if name != "memory.swap.max":  # v2 without swap accounting: nothing to limit
                lacking.append(name)
    return lacking
