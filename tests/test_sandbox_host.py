"""Sandbox round 3 (issue 29), the host's side: no solution uses up a resource the host shares
(AIO contexts, ptys, CPU, socket buffers, huge pages, socket families the code never needs), and
two pools never share a uid, so never a process limit.

Each attack is followed by a normal solution that must still work, with no worker restart.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading

import pytest
from test_sandbox import BWRAP_PROBLEM, NORMAL, NORMAL_OUT

from scdpo.sandbox import SandboxConfig, SandboxPool, _cgroup, _confine, _launch, _seccomp

pytestmark = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=str(BWRAP_PROBLEM))

TIMEOUT = 4.0
PRIVILEGED = os.geteuid() == 0
needs_root = pytest.mark.skipif(not PRIVILEGED, reason="per-solution namespaces need root")
x86_64 = pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is for x86_64")


def _controller(name: str) -> bool:
    group = _cgroup.WorkerCgroups.create("probe", 512, 64, (name,))
    if group is not None:
        group.remove()
    return group is not None and not group.missing


needs_cpu_cgroup = pytest.mark.skipif(
    not _controller("cpu"), reason="no writable cpu cgroup (v1 or v2) on this machine"
)
needs_memory_cgroup = pytest.mark.skipif(
    not _controller("memory"), reason="no writable memory cgroup (v1 or v2) on this machine"
)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout=TIMEOUT)) as p:
        assert p.run(NORMAL) == NORMAL_OUT
        yield p


@pytest.fixture
def attack(pool: SandboxPool, caplog: pytest.LogCaptureFixture):
    def run(blocks: list[str]) -> list[str]:
        caplog.clear()
        outputs = pool.run(blocks)
        assert len(outputs) == len(blocks)
        assert pool.run(NORMAL) == NORMAL_OUT
        assert not [r for r in caplog.records if "died" in r.getMessage()]
        return outputs

    return run


LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"


# ---------------------------------------------------------------- AIO contexts


@x86_64
def test_aio_contexts_cannot_be_taken(attack) -> None:
    """io_setup until the host's limit (fs.aio-max-nr) would leave the pipeline none."""
    code = (
        LIBC + "ok = errors = 0\nfor _ in range(2000):\n    ctx = ctypes.c_ulong(0)\n"
        "    if libc.syscall(206, 64, ctypes.byref(ctx)) == 0:\n        ok += 1\n"
        "    else:\n        errors = ctypes.get_errno()\nok, errors"
    )
    assert attack([code]) == ["(0, 1)"]  # every call refused with EPERM
    others = [
        LIBC + f"libc.syscall({nr}, 0, 0, 0, 0, 0), ctypes.get_errno()" for nr in (208, 209, 333)
    ]
    assert attack(others) == ["(-1, 1)"] * 3  # io_getevents, io_submit, io_pgetevents
    libc = ctypes.CDLL(None, use_errno=True)  # the host keeps its own
    ctx = ctypes.c_ulong(0)
    assert libc.syscall(206, 8, ctypes.byref(ctx)) == 0
    libc.syscall(207, ctx)


# ---------------------------------------------------------------- ptys


@needs_root
def test_ptys_are_capped_per_solution(attack) -> None:
    """Each solution has a devpts of its own with a small `max`; the host's pool stays."""
    grab = (
        "import os\nfds = []\ntry:\n    while True:\n"
        "        fds.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))\n"
        "except OSError as e:\n    print(len(fds), e.errno)"
    )
    expected = f"{_confine.DEVPTS_MAX} {errno.ENOSPC}\n"
    # Two cells of one solution share its devpts: the first one's ptys are still held.
    assert attack([grab, grab]) == [expected, f"0 {errno.ENOSPC}\n"]
    assert attack([grab]) == [expected]  # the next solution: all of them again
    assert attack(["import os, pty\nmaster, slave = pty.openpty()\nos.ttyname(slave)"]) == [
        "'/dev/pts/0'"
    ]
    master, slave = os.openpty()  # the host can still open one
    os.close(master)
    os.close(slave)


# ---------------------------------------------------------------- CPU


HOG = (
    "import os, time\nfor _ in range(60):\n    if os.fork() == 0:\n        os.setsid()\n"
    "        while True:\n            pass\ntime.sleep(60)"
)
VICTIM = "import time\ntime.sleep(0.5)\nsum(range(2 * 10**7))"  # about 0.5 s of CPU


@needs_cpu_cgroup
def test_busy_processes_in_their_own_sessions_do_not_starve_the_other_worker(pool) -> None:
    """60 busy processes share their worker's CPU quota; the other worker's solution gets
    its share and finishes (without a cpu cgroup it timed out)."""
    hog = pool.submit([HOG])
    threading.Event().wait(0.3)  # the hog's worker is busy: the victim goes to the other one
    assert pool.run([VICTIM]) == [str(sum(range(2 * 10**7)))]
    assert hog.result()[0].startswith("TimeoutError")
    assert pool.run(NORMAL) == NORMAL_OUT


@needs_cpu_cgroup
def test_every_worker_sits_in_a_cpu_cgroup_with_a_quota(pool) -> None:
    base, version = _cgroup.hierarchy("cpu")
    # A replaced worker's group may linger empty for a moment (its processes die first): only
    # the groups that hold processes are the live workers'.
    groups = list(base.glob(f"scdpo-w*-{os.getpid()}-*"))
    live = [g for g in groups if (g / "cgroup.procs").read_text().split()]
    assert len(live) >= 2, "a worker sits in no cpu cgroup"  # the pool has two workers
    for group in groups:
        if version == 1:
            quota = int((group / "cpu.cfs_quota_us").read_text())
            period = int((group / "cpu.cfs_period_us").read_text())
        else:
            quota, period = map(int, (group / "cpu.max").read_text().split())
        assert quota == _cgroup.CPU_QUOTA * period


# ---------------------------------------------------------------- socket buffers

FILL_SOCKETS = (
    "import socket\nserver = socket.create_server(('127.0.0.1', 0), backlog=200)\n"
    "held, queued = [], 0\nfor _ in range(70):\n"
    "    c = socket.create_connection(server.getsockname())\n    a, _ = server.accept()\n"
    "    for s in (c, a):\n        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 30)\n"
    "        s.setblocking(False)\n        try:\n            while True:\n"
    "                queued += s.send(b'x' * (1 << 20))\n        except OSError:\n"
    "            pass\n    held += [c, a]\nprint(queued >> 20)"
)


@needs_root
@needs_memory_cgroup
def test_loopback_socket_buffers_are_counted_and_capped(attack) -> None:
    """140 loopback TCP sockets held about 1 GB of buffers outside the memory cgroup."""
    out = attack([FILL_SOCKETS])[0]
    if out.startswith("MemoryError"):  # cgroup v2: the worker stops it at the cap
        assert "sockets held more than" in out
    else:
        assert int(out) <= 2 * _cgroup.SOCKET_MB, out


# ---------------------------------------------------------------- socket families, huge pages

FAMILIES = {
    "AF_VSOCK": 40,
    "AF_NETLINK": 16,
    "AF_PACKET": 17,
    "AF_ALG": 38,
    "AF_TIPC": 30,
    "AF_CAN": 29,
    "AF_BLUETOOTH": 31,
    "AF_RDS": 21,
    "AF_KEY": 15,
    "AF_XDP": 44,
    "AF_QIPCRTR": 42,
    "AF_SMC": 43,
}


@x86_64
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_socket_families_beyond_unix_and_inet_are_refused(attack, family: str) -> None:
    number = FAMILIES[family]
    code = [
        LIBC + f"[(libc.socket({number}, t, 0), ctypes.get_errno()) for t in (1, 2, 3, 5)]",
        LIBC + f"fds = (ctypes.c_int * 2)()\nlibc.socketpair({number}, 1, 0, fds), "
        "ctypes.get_errno()",
    ]
    refused = (-1, errno.EAFNOSUPPORT)
    assert attack(code) == [repr([refused] * 4), repr(refused)]


def test_unix_and_inet_sockets_still_work(attack) -> None:
    code = (
        "import socket\na, b = socket.socketpair()\na.sendall(b'hi')\nu = b.recv(2)\n"
        "s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s4 = socket.create_server(('127.0.0.1', 0))\n"
        "c = socket.create_connection(s4.getsockname())\nu, s6.family.name, c.family.name"
    )
    assert attack([code]) == ["(b'hi', 'AF_INET6', 'AF_INET')"]


@x86_64
def test_huge_pages_from_the_hosts_pool_are_refused(attack) -> None:
    code = (
        LIBC + "libc.mmap.restype = ctypes.c_void_p\n"
        "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + "
        "[ctypes.c_long]\nhuge = 0x40000 | 0x20 | 0x02  # MAP_HUGETLB | ANONYMOUS | PRIVATE\n"
        "p = libc.mmap(None, 2 << 20, 3, huge, -1, 0)\np == ctypes.c_void_p(-1).value, "
        "ctypes.get_errno()"
    )
    assert attack([code]) == [f"(True, {errno.EPERM})"]


def test_the_filter_refuses_only_what_it_names() -> None:
    """Checked without running it: every jump lands in the program, every return is known."""
    program = _seccomp.seccomp_program()
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    returns = {
        int.from_bytes(program[i + 4 : i + 8], "little")
        for i in range(0, len(program), 8)
        if program[i] == 0x06
    }
    assert returns == set(_seccomp.RETURNS.values())


# ---------------------------------------------------------------- uids per pool

THREADS = (
    "import threading\nts = [threading.Thread(target=lambda: None) for _ in range(8)]\n"
    "[t.start() for t in ts]\n[t.join() for t in ts]\n'threads ran'"
)
FILL_PROCESSES = (
    "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
    "            time.sleep(5)\n            os._exit(0)\n        n += 1\n"
    "except OSError as e:\n    print(n, e.errno)\ntime.sleep(2)"
)


@needs_root
def test_two_pools_in_one_process_never_share_a_uid(caplog) -> None:
    """Slot 0 of two pools had the same uid, so one process limit: a fork-heavy solution in
    one pool kept the other's from starting threads."""
    config = SandboxConfig(timeout=TIMEOUT, max_processes=16)
    uid = ["import os\nos.getuid()"]
    with SandboxPool(workers=1, config=config) as one, SandboxPool(workers=1, config=config) as two:
        uids = {one.run(uid)[0], two.run(uid)[0]}
        assert len(uids) == 2 and all(int(u) >= _launch.UID_BASE for u in uids)
        assert all(os.getpid() in _block_lock_holders(int(u)) for u in uids)
        forks = one.submit([FILL_PROCESSES])
        threading.Event().wait(1.0)  # pool one's uid is at its process limit now
        assert two.run([THREADS]) == ["'threads ran'"]
        count, err = forks.result()[0].split()
        assert int(count) < 16 and int(err) == errno.EAGAIN
    # A closed pool's uids are free again: this process holds no lock on their blocks (another
    # process, e.g. another test worker, may take them at once: the lowest free block goes first).
    for u in uids:
        assert os.getpid() not in _block_lock_holders(int(u))
    with SandboxPool(workers=1, config=config) as three:
        assert int(three.run(uid)[0]) >= _launch.UID_BASE
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _block_lock_holders(uid: int) -> set[int]:
    """Pids holding the flock of the uid block that `uid` is in (from /proc/locks)."""
    block = (uid - _launch.UID_BASE) // _launch.UID_SLOTS
    files = [os.path.join(d, str(block)) for d in _launch.UID_LOCKS]
    stats = [os.stat(f) for f in files if os.path.exists(f)]
    assert stats, f"no lock file of block {block} in {_launch.UID_LOCKS}"
    # /proc/locks names a file as major:minor:inode, the device numbers in hex.
    names = {f"{os.major(s.st_dev):02x}:{os.minor(s.st_dev):02x}:{s.st_ino}" for s in stats}
    holders = set()
    for line in open("/proc/locks").read().splitlines():
        fields = line.split()
        if "FLOCK" in fields:
            at = fields.index("FLOCK")
            if fields[at + 4] in names:
                holders.add(int(fields[at + 3]))
    return holders


def test_uid_leases_are_exclusive(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_launch, "UID_LOCKS", (str(tmp_path / "locks"),))
    leases = [_launch.UidLease() for _ in range(3)]
    bases = [lease.base for lease in leases]
    assert len(set(bases)) == 3 and all(b % _launch.UID_SLOTS == 0 for b in bases)
    leases[1].release()
    again = _launch.UidLease()
    assert again.base == bases[1]
    for lease in (*leases, again):
        lease.release()
