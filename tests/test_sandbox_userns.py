"""Nodes without unprivileged user namespaces (issue 25.5): the pool says so before it starts.

The real case is made in a child: it drops to an unprivileged uid (as a cluster user runs) under a
seccomp filter that refuses new user namespaces with EPERM, as a container runtime's profile does,
so bubblewrap fails there exactly as on such a node. The kernel settings that usually cause it
are tested on a faked /proc/sys.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from scdpo.sandbox import SandboxConfig, SandboxError, SandboxPool, _launch, _userns

BWRAP = _launch.find_bwrap()
NOBODY = 65534


def test_sysctl_settings_that_turn_user_namespaces_off(tmp_path):
    root = tmp_path / "sys"
    (root / "kernel").mkdir(parents=True)
    (root / "user").mkdir()
    assert _userns.sysctl_reasons(root) == []  # a kernel without these switches
    (root / "kernel" / "unprivileged_userns_clone").write_text("1\n")
    (root / "user" / "max_user_namespaces").write_text("63704\n")
    (root / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("0\n")
    assert _userns.sysctl_reasons(root) == []  # all allowed
    (root / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    [debian] = _userns.sysctl_reasons(root)
    assert debian.startswith("kernel.unprivileged_userns_clone = 0")
    (root / "user" / "max_user_namespaces").write_text("0\n")
    (root / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    reasons = _userns.sysctl_reasons(root)
    assert len(reasons) == 3
    assert reasons[1].startswith("user.max_user_namespaces = 0")
    assert "AppArmor" in reasons[2]


def test_the_message_names_the_cause_and_the_docs():
    error = "bwrap: setting up uid map: Permission denied"
    reasons = ["user.max_user_namespaces = 0 (no user namespace may be created)"]
    message = _userns.explain(error, privileged=False, reasons=reasons)
    assert "unprivileged user namespaces are off here: user.max_user_namespaces = 0" in message
    assert message.endswith(f"bwrap said: {error}")
    assert "seccomp profile" in _userns.explain(error, privileged=False, reasons=[])
    assert "even as root" in _userns.explain(error, privileged=True, reasons=[])


def test_a_failing_probe_refuses_the_pool_before_any_worker(monkeypatch):
    monkeypatch.setattr(_launch, "find_bwrap", lambda: "/usr/bin/bwrap")
    monkeypatch.setattr(_launch, "_unusable", lambda bwrap, privileged: "no namespaces (faked)")
    monkeypatch.setattr(_launch, "UidLease", lambda: pytest.fail("a pool was being set up"))
    with pytest.raises(
        SandboxError, match=r"no namespaces \(faked\)\. Refusing .*allow_unsandboxed"
    ):
        SandboxPool(workers=1)


def test_probe_reports_bwraps_error_and_a_missing_program():
    code = "import sys; print('bwrap: No permissions', file=sys.stderr); sys.exit(1)"
    assert _userns.probe([sys.executable, "-c", code]) == "bwrap: No permissions"
    assert _userns.probe([sys.executable, "-c", "pass"]) is None
    assert "could not be run" in _userns.probe(["/nonexistent/bwrap"])


# --- the real thing, in a child without user namespaces --------------------------------------

CHILD = textwrap.dedent(
    """
    import json, logging, os, sys
    from scdpo.sandbox import SandboxConfig, SandboxError, SandboxPool, _seccomp

    # No new user namespace: clone/unshare with CLONE_NEWUSER fail with EPERM, clone3 with ENOSYS
    # (libc then uses clone), as under a container runtime's seccomp profile.
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    _seccomp.install_seccomp(_seccomp.assemble([
        (ld, 0, 0, 0),
        (jeq, "enosys", 0, 435),
        (jeq, "flags", 0, 56),
        (jeq, "flags", "allow", 272),
        "flags", (ld, 0, 0, 16), (jset, "eperm", "allow", 0x10000000),
        "allow", (ret, 0, 0, 0x7FFF0000),
        "eperm", (ret, 0, 0, 0x00050000 | 1),
        "enosys", (ret, 0, 0, 0x00050000 | 38),
    ]))
    os.setgroups([])
    os.setgid({uid})
    os.setuid({uid})
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = {{}}
    try:
        SandboxPool(workers=1).close()
        result["refused"] = None
    except SandboxError as exc:
        result["refused"] = str(exc)
    print(json.dumps(result))
    """
)


def _in_child_without_user_namespaces() -> tuple[dict, str]:
    code = CHILD.format(uid=NOBODY)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


needs_root_x86_bwrap = pytest.mark.skipif(
    BWRAP is None or os.geteuid() != 0 or platform.machine() != "x86_64",
    reason="needs bwrap, root (to drop to another uid under a seccomp filter) and x86_64",
)


@needs_root_x86_bwrap
def test_without_user_namespaces_the_pool_refuses_at_start_and_says_why():
    if _launch._unusable(BWRAP, False) is not None:
        pytest.skip("bwrap cannot build an unprivileged sandbox here even with user namespaces")
    result, _ = _in_child_without_user_namespaces()
    message = result["refused"]
    assert message is not None, "the pool started without user namespaces"
    assert message.startswith("bubblewrap cannot build the code sandbox on this node")
    assert "not root, it needs a user namespace" in message  # no sysctl says so on this kernel
    assert "bwrap said: " in message and "namespace" in message.split("bwrap said: ")[1].lower()
    assert "Nodes without unprivileged user namespaces" in message
    assert "allow_unsandboxed" in message


def test_allow_unsandboxed_runs_the_code_with_limits_only_and_says_so_loudly(monkeypatch, caplog):
    # (In-process: the child above cannot start a worker, as its uid may not run this venv's
    # interpreter here.)
    why = "bubblewrap cannot build the code sandbox on this node (faked)"
    monkeypatch.setattr(_launch, "find_bwrap", lambda: "/usr/bin/bwrap")
    monkeypatch.setattr(_launch, "_unusable", lambda bwrap, privileged: why)
    config = SandboxConfig(timeout=5.0, allow_unsandboxed=True)
    with SandboxPool(workers=1, config=config) as pool:
        assert not pool._launch.sandboxed
        assert pool.run(["x = 6 * 7", "print(x)"]) == ["", "42\n"]
    warning = next(r.getMessage() for r in caplog.records if "UNSANDBOXED" in r.getMessage())
    assert warning.startswith(f"!!! {why}: running model-written code UNSANDBOXED")


def test_root_and_unprivileged_probes_pass_where_the_sandbox_works():
    if BWRAP is None:
        pytest.skip("bubblewrap is not installed")
    config = SandboxConfig(timeout=5.0)
    if _launch._unusable(BWRAP, os.geteuid() == 0) is None:
        assert _launch._make_launch(config).sandboxed
