"""A memory cgroup per sandbox worker, so the limit counts all the memory its solutions cause.

RLIMIT_AS caps one process's address space; a cgroup's limit also counts shared memory,
tmpfs files, page tables and kernel memory of every process in it. Needs a writable cgroup
hierarchy with the memory controller (v2, or v1 as on these machines): usually root.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("scdpo.sandbox")
_names = itertools.count()


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
    """Remove the empty cgroups of pools whose process is gone (killed before closing them)."""
    for path in base.glob("scdpo-*-*-*"):
        pid = path.name.split("-")[-2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                path.rmdir()
            except OSError:
                pass


class MemoryCgroup:
    """One cgroup directory with a memory limit; workers are moved in by `wrap`."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version
        self.limit_file = "memory.max" if version == 2 else "memory.limit_in_bytes"
        # v1's oom_control and v2's events both have an `oom_kill N` line.
        self.events = "memory.events" if version == 2 else "memory.oom_control"
        self.current = "memory.current" if version == 2 else "memory.usage_in_bytes"

    @classmethod
    def create(cls, tag: str, limit_mb: int) -> MemoryCgroup | None:
        """A new cgroup below ours, or None where none can be made (logged once per pool)."""
        for base, version in cls._candidates():
            _remove_stale(base)
            path = base / f"scdpo-{tag}-{os.getpid()}-{next(_names)}"
            try:
                path.mkdir()
            except OSError:
                continue
            group = cls(path, version)
            try:
                group.set_limit(limit_mb << 20)
                if version == 2:
                    (path / "memory.swap.max").write_text("0")
                return group
            except OSError:
                group.remove()
        return None

    @staticmethod
    def _candidates() -> list[tuple[Path, int]]:
        out = []
        for mount, fstype, options in _mounts():
            if fstype == "cgroup" and "memory" in options:
                own = _own_path("memory")
                if own is not None:
                    out.append((Path(mount + own.rstrip("/")), 1))
            elif fstype == "cgroup2":
                own = _own_path("")
                base = Path(mount + (own or "/").rstrip("/"))
                ctl = base / "cgroup.subtree_control"
                if ctl.exists() and "memory" in ctl.read_text().split():
                    out.append((base, 2))
        return out

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

    def wrap(self, argv: list[str]) -> list[str]:
        """Run `argv` inside this cgroup: a shell joins it, then execs the command."""
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def remove(self) -> None:
        """Remove the directory once its processes are gone (they die with the worker)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)
        log.warning("could not remove the sandbox's memory cgroup %s", self.path)
