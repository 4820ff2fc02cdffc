"""Whether bubblewrap can build its sandbox on this node, asked before a pool starts.

Not root, bwrap needs a user namespace (`--unshare-all`), and many clusters turn unprivileged user
namespaces off. Without this probe a pool's workers would die at start with bwrap's one-line
error in a thread's log, after the job queued and loaded its model. The probe runs bwrap in a
child exactly as the pool will (the same options, a trivial program) and, when it fails, says
why from the kernel's settings and what can be done (docs/sandbox.md, "Nodes without
unprivileged user namespaces").
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# /proc/sys entry, the value that turns user namespaces off for us, what it means.
SYSCTLS = (
    (
        "kernel/unprivileged_userns_clone",
        "0",
        "kernel.unprivileged_userns_clone = 0 (Debian's and older Ubuntu kernels' switch for "
        "unprivileged user namespaces)",
    ),
    (
        "user/max_user_namespaces",
        "0",
        "user.max_user_namespaces = 0 (no user namespace may be created; RHEL/CentOS 7's default)",
    ),
    (
        "kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10 and later: AppArmor lets "
        "only programs whose profile allows `userns` use them)",
    ),
)
DOCS = "docs/sandbox.md, 'Nodes without unprivileged user namespaces'"


def sysctl_reasons(root: Path = Path("/proc/sys")) -> list[str]:
    """The kernel settings found that stop unprivileged user namespaces ([] if none)."""
    found = []
    for entry, blocking, meaning in SYSCTLS:
        try:
            value = (root / entry).read_text().strip()
        except OSError:
            continue  # this kernel has no such switch
        if value == blocking:
            found.append(meaning)
    return found


def probe(argv: list[str], timeout: float = 60.0) -> str | None:
    """None when `argv` (bwrap's options, then a program that does nothing) runs; else what
    went wrong, from bwrap's last lines of error."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env={}, stdin=subprocess.DEVNULL, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"bwrap did not finish within {timeout:g} s"
    except OSError as exc:
        return f"bwrap could not be run: {exc}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return " / ".join(lines[-3:]) or f"bwrap exited with status {done.returncode}"


def explain(error: str, privileged: bool, reasons: list[str]) -> str:
    """One message: what failed, the kernel settings behind it, where the options are."""
    if privileged:
        why = "even as root (a container without CAP_SYS_ADMIN, or a seccomp profile, refuses it)"
    elif reasons:
        why = "because unprivileged user namespaces are off here: " + "; ".join(reasons)
    else:
        why = (
            "(not root, it needs a user namespace; no kernel setting here turns them off, so a "
            "container runtime's seccomp profile or a security module may refuse them)"
        )
    return f"bubblewrap cannot build the code sandbox on this node {why}; bwrap said: {error}"
