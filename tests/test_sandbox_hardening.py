"""Sandbox hardening (issue 14): one or more cases per class of failure an adversary found.

Stalls, memory outside the cap, carry-over between solutions, worker deaths from inside,
outputs that break the pipeline, reproducibility, notebook gaps and symlinked paths. Each
attack is followed by a normal solution that must still work, with no worker restart.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_sandbox import BWRAP_PROBLEM, NORMAL, NORMAL_OUT, _children_named, last_line

from scdpo.jsonl import write_jsonl
from scdpo.sandbox import (
    SandboxConfig,
    SandboxPool,
    _cells,
    _cgroup,
    _confine,
    _launch,
    _pool,
    _supervise,
    _watch,
)

pytestmark = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=str(BWRAP_PROBLEM))

TIMEOUT = 2.0
PRIVILEGED = os.geteuid() == 0  # fresh namespaces per solution need the root-run sandbox
needs_root = pytest.mark.skipif(not PRIVILEGED, reason="per-solution namespaces need root")


def _has_memory_cgroup() -> bool:
    group = _cgroup.MemoryCgroup.create("probe", 64)
    if group is not None:
        group.remove()
    return group is not None


needs_cgroup = pytest.mark.skipif(
    not _has_memory_cgroup(), reason="no writable memory cgroup (v1 or v2) on this machine"
)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout=TIMEOUT)) as p:
        assert p.run(NORMAL) == NORMAL_OUT
        yield p


@pytest.fixture
def attack(pool: SandboxPool, caplog: pytest.LogCaptureFixture):
    def run(blocks: list[str], seed: str | None = None) -> list[str]:
        caplog.clear()
        outputs = pool.run(blocks, seed)
        assert len(outputs) == len(blocks)
        assert pool.run(NORMAL) == NORMAL_OUT
        assert not [r for r in caplog.records if "died" in r.getMessage()]
        return outputs

    return run


def both_workers(pool: SandboxPool, blocks: list[str]) -> list[list[str]]:
    """Run a solution often enough that each of the two workers runs it."""
    return [f.result() for f in [pool.submit(blocks) for _ in range(6)]]


# ---------------------------------------------------------------- stalls


def test_closing_the_result_pipe_does_not_hold_the_worker(attack) -> None:
    out = attack(["import os, time\nos.close(3)\ntime.sleep(60)", "print('next')"])
    assert "broke the sandbox protocol" in out[0]
    assert out[1] == "next\n"


def test_a_stalled_worker_is_killed_retried_once_and_logged(monkeypatch, caplog) -> None:
    """Every wait of the pool ends at the block's timeout plus a margin."""
    monkeypatch.setattr(_pool, "BLOCK_MARGIN", 0.5)
    before = set(_children_named("bwrap"))
    with SandboxPool(workers=1, config=SandboxConfig(timeout=1.0)) as p:
        assert p.run(["1"]) == ["1"]
        (bwrap,) = set(_children_named("bwrap")) - before
        for worker in _children_of(bwrap):  # the worker, PID 1 inside: it stops answering
            os.kill(worker, signal.SIGSTOP)
        assert p.run(NORMAL) == NORMAL_OUT  # on a fresh worker
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("did not answer in time" in m and "retrying" in m for m in messages)


def _children_of(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return pids


# ---------------------------------------------------------------- memory outside the cap


@pytest.fixture(scope="module")
def small():
    with SandboxPool(workers=1, config=SandboxConfig(timeout=4, memory_mb=600)) as p:
        assert p.run(["1"]) == ["1"]
        yield p


MEMORY_STOP = "MemoryError: the code's processes used more than 600 MB together and were stopped"
SHARED_MMAP = (
    "import mmap, os, time\nfor _ in range(3):\n    if os.fork() == 0:\n"
    "        m = mmap.mmap(-1, 200 << 20, flags=mmap.MAP_SHARED)\n"
    "        for i in range(0, 200 << 20, 1 << 20):\n"
    "            m[i : i + (1 << 20)] = b'x' * (1 << 20)\n"
    "        time.sleep(60)\ntime.sleep(60)"
)
SMALL_INTERPRETERS = (
    "import os, time\nfor _ in range(8):\n    if os.fork() == 0:\n"
    "        hog = bytearray(100 << 20)\n        hog[::4096] = b'x' * len(hog[::4096])\n"
    "        time.sleep(60)\ntime.sleep(60)"
)
CHATTY_HOG = (
    "import os, time\nhogs = []\nfor i in range(60):\n    if os.fork() == 0:\n"
    "        hog = b'x' * (30 << 20)\n        time.sleep(60)\n"
    "    print(i, flush=True)\n    time.sleep(0.02)"
)


@needs_cgroup
@pytest.mark.parametrize("code", [SHARED_MMAP, SMALL_INTERPRETERS, CHATTY_HOG])
def test_memory_of_every_kind_counts_against_the_cap(small: SandboxPool, code: str) -> None:
    out = small.run([code, "print('fresh')"])
    assert last_line(out[0]) == MEMORY_STOP
    assert out[1] == "fresh\n"


@needs_cgroup
def test_tmpfs_files_count_and_workers_sit_in_a_memory_cgroup(small: SandboxPool) -> None:
    out = small.run(["open('/dev/shm/a', 'wb').write(b'x' * (60 << 20))", "print('fresh')"])
    assert out == ["62914560", "fresh\n"]  # within the cap: 60 MB of 600
    groups = list(Path("/sys/fs/cgroup").rglob(f"scdpo-w0-{os.getpid()}-*"))
    assert groups, "the worker is not in a memory cgroup"


# ---------------------------------------------------------------- carry-over between solutions

DENIED_CALLS = [
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.shmget(0, 1 << 20, 0o1666), ctypes.get_errno())",  # SysV shared memory
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.syscall(248, b'user', b'k', b'secret', 6, -2), ctypes.get_errno())",  # add_key
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.syscall(250, 0, -2, 0, 0, 0), ctypes.get_errno())",  # keyctl(GET_KEYRING_ID)
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.syscall(68, 0, 0o1666), ctypes.get_errno())",  # msgget
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.syscall(240, b'/q', 0o100 | 2, 0o666, None), ctypes.get_errno())",  # mq_open
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.syscall(319, b'x', 0), ctypes.get_errno())",  # memfd_create
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "(libc.unshare(0x10000000), ctypes.get_errno())",  # a new user namespace
]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is for x86_64")
@pytest.mark.parametrize("code", DENIED_CALLS)
def test_state_holding_system_calls_are_denied(attack, code: str) -> None:
    assert attack([code])[0] == "(-1, 1)"  # EPERM


def test_os_level_apis_fail_cleanly(attack) -> None:
    out = attack(["import os\nos.memfd_create('x')", "import os\nos.unshare(0x10000000)"])
    assert last_line(out[0]) == "PermissionError: [Errno 1] Operation not permitted"
    assert "Error" in last_line(out[1])  # no os.unshare before Python 3.12


@needs_root
def test_nothing_in_tmp_or_dev_shm_survives_a_solution(pool: SandboxPool, attack) -> None:
    leave = (
        "import os\nos.makedirs('locked/inner')\nopen('locked/inner/f', 'w').write('x' * 1000)\n"
        "os.chmod('locked/inner', 0)\nos.chmod('locked', 0)\n"
        "open('/dev/shm/left', 'w').write('secret')\nopen('/tmp/.hidden', 'w').write('secret');"
    )
    assert attack([leave]) == [""]
    look = "import os\nsorted(os.listdir('/tmp')), os.listdir('/dev/shm')"
    expected = repr((_python_entries_in_tmp(), []))
    assert all(out == [expected] for out in both_workers(pool, [look]))


def _python_entries_in_tmp() -> list[str]:
    roots = [Path(r) for r in _launch._python_roots()]
    return sorted({r.relative_to("/tmp").parts[0] for r in roots if r.is_relative_to("/tmp")})


@needs_root
def test_a_flood_of_files_is_capped_and_costs_the_next_solution_nothing(attack) -> None:
    flood = (
        "import os\nn = 0\ntry:\n    while True:\n        open(f'f{n}', 'w').close()\n"
        "        n += 1\nexcept OSError as e:\n    print(n, e.errno)"
    )
    count, errno = attack([flood])[0].split()
    assert int(count) < _confine.TMP_INODES and errno == "28"  # ENOSPC: out of inodes


def test_a_child_cannot_find_an_earlier_solutions_code(pool: SandboxPool) -> None:
    """Children fork from a zygote whose memory never held a solution."""
    secret = "SECRET_" + os.urandom(8).hex()
    assert both_workers(pool, [f"x = {secret!r}\nlen(x)"])[0] == [str(len(secret))]
    scan = (
        "import ctypes, sys\nlibc = ctypes.CDLL(None)\nlibc.memmem.restype = ctypes.c_void_p\n"
        "c = ctypes\nlibc.memmem.argtypes = [c.c_void_p, c.c_size_t, c.c_char_p, c.c_size_t]\n"
        f"needle = b'SECRET_' + {secret[7:].encode()!r}\n"
        "own = id(needle) + sys.getsizeof(b'') - 1  # the needle's own bytes\n"
        "hits = 0\nfor line in open('/proc/self/maps').read().splitlines():\n"
        "    if ' rw-p ' not in line:\n        continue\n"
        "    lo, hi = (int(v, 16) for v in line.split()[0].split('-'))\n"
        "    while lo < hi and (at := libc.memmem(lo, hi - lo, needle, len(needle))):\n"
        "        hits += at != own\n        lo = at + 1\nhits"
    )
    for out in both_workers(pool, [scan]):
        assert out == ["0"]


# ---------------------------------------------------------------- worker deaths from inside


@pytest.mark.parametrize(
    "code",
    [
        # A forged result frame, then the real one: more results than blocks.
        "import os, json, struct\nb = json.dumps({'i': 1, 'text': 'x', 'n': 1, 'last': ''})"
        ".encode()\nframe = struct.pack('>I', len(b)) + b\nos.write(3, frame + frame)",
        # A frame nested deep enough to make a JSON decoder recurse out.
        "import os, struct\nb = b'[' * 60000\nos.write(3, struct.pack('>I', len(b)) + b)",
        # A frame announcing more than the limit.
        "import os\nos.write(3, b'\\xff\\xff\\xff\\xff')\nimport time\ntime.sleep(1)",
    ],
)
def test_forged_result_frames_stop_only_that_solution(attack, code: str) -> None:
    out = attack([code, "print('fresh')"])
    assert "broke the sandbox protocol" in out[0] or out[0] == "x"
    assert out[1] in ("fresh\n",) or "broke the sandbox protocol" in out[1]


@pytest.mark.parametrize("sig", [34, 35, 50, 63, 64])
def test_real_time_signals_end_the_code_not_the_worker(attack, sig: int) -> None:
    out = attack([f"import os\nos.kill(os.getpid(), {sig})", "print('fresh')"])
    assert "killed by SIGRT" in out[0]
    assert out[1] == "fresh\n"


def test_result_handling_errors_never_kill_the_worker() -> None:
    sup = _supervise.Supervisor.__new__(_supervise.Supervisor)
    sup.ctrl_limit = 1000
    buf = bytearray(_cells.HEADER.pack(8) + b"[[[[[[[[")
    ready: set[str] = set()
    assert sup.pop_results(buf, 1, ready) == [] and ready == {"protocol"}
    assert _watch.death_message(signal.SIGRTMIN + 5).startswith("RuntimeError")  # exit code
    assert "SIGRTMIN+5" in _watch.death_message(signal.SIGRTMIN + 5 & 0x7F)


# ---------------------------------------------------------------- outputs that break the pipeline


def test_outputs_are_valid_utf8_with_markers_escaped(attack, tmp_path: Path) -> None:
    out = attack(
        [
            "raise ValueError('\\ud83d')",
            "class A:\n    def __repr__(self):\n        return '\\udc80' * 3\nA()",
            "print('<|endofblock|><|endofmessage|><|code|>')",
            "import os\n_ = os.write(1, b'\\xff\\xfe bad bytes\\n')",
        ]
    )
    assert last_line(out[0]) == "ValueError: \ufffd"
    assert out[1] == "\ufffd\ufffd\ufffd"
    assert "<|endofblock|>" not in out[2] and "<|endofmessage|>" not in out[2]
    assert out[2] == "<\\|endofblock|><\\|endofmessage|><\\|code|>\n"
    for text in out:
        text.encode("utf-8")
    assert write_jsonl(tmp_path / "o.jsonl", [{"execution": o} for o in out]) == 4
    assert not list(tmp_path.glob("*.tmp"))
    assert [json.loads(line)["execution"] for line in open(tmp_path / "o.jsonl")] == out


def test_truncation_counts_characters_and_keeps_the_error_line(attack) -> None:
    out = attack(
        [
            "print('é' * 10000)",  # multi-byte, beyond what the worker keeps
            "print('x' * 5000)\nraise KeyError('the end')",
            "def f(n):\n    return g(n)\ndef g(n):\n    return f(n - 1) if n else 1 / 0\nf(300)",
        ]
    )
    assert out[0] == "é" * 2000 + "\n... [output truncated: 8001 more characters]"
    assert last_line(out[1]) == "KeyError: 'the end'"
    head, note = out[1].split("\n... [output truncated: ")
    omitted = int(note.split(" ")[0])
    assert head == "x" * len(head)
    tail = "KeyError: 'the end'"
    traceback_len = len(out[1]) - len(head) - len("\n... [output truncated:  more characters]\n")
    assert omitted > 5001 - len(head) and traceback_len > 0
    assert last_line(out[2]) == "ZeroDivisionError: division by zero"
    assert len(out[2]) < 2200 and tail not in out[2]


def test_compose_is_exact() -> None:
    """What the note says was left out is exactly what is missing."""
    full = "o" * 1500 + "Traceback\n" + "t" * 900 + "\nValueError: boom"
    result = _confine.clip(full[1500:], "ValueError: boom", 1, 2000)
    text = _watch.compose("o" * 1500, 0, result, 2000)
    head, rest = text.split("\n... [output truncated: ")
    omitted = int(rest.split(" ")[0])
    assert rest.endswith("\nValueError: boom")
    assert len(head) + omitted + len("ValueError: boom") == len(full)
    assert full.startswith(head)


# ---------------------------------------------------------------- reproducibility


RANDOM = [
    "import random, numpy as np\nrandom.random(), np.random.randint(10**9)",
    "sorted({'apple', 'kiwi', 'fig'}) == list({'apple', 'kiwi', 'fig'}), list({'b', 'a', 'c'})",
    "import random\nrandom.random()",
]


def test_random_values_and_set_order_are_reproducible(pool: SandboxPool) -> None:
    runs = both_workers(pool, RANDOM)
    assert all(run == runs[0] for run in runs)
    # The pipeline replays earlier blocks at every submission: their values must not change.
    assert pool.run(RANDOM[:1]) == runs[0][:1]
    assert pool.run(RANDOM, seed="sample-7") == pool.run(RANDOM, seed="sample-7")
    assert pool.run(RANDOM, seed="sample-7") != pool.run(RANDOM, seed="sample-8")


# ---------------------------------------------------------------- notebook gaps


def test_matplotlib_uses_agg_and_a_prepared_font_cache(attack) -> None:
    code = (
        "import matplotlib, matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\n"
        "plt.savefig('p.png')\nimport os\nmatplotlib.get_backend(), os.path.getsize('p.png') > 0"
    )
    out = attack([code], seed="mpl")[0]
    assert out == "('Agg', True)", out  # no font-cache warning in the output


@needs_root
def test_multiprocessing_pool_works(attack) -> None:
    code = "import multiprocessing as mp\nwith mp.Pool(2) as p:\n    print(p.map(abs, [-1, -2]))"
    assert attack([code]) == ["[1, 2]\n"]


# ---------------------------------------------------------------- paths


def test_a_venv_reached_through_a_symlinked_directory(tmp_path: Path) -> None:
    venv = Path(sys.prefix).resolve()
    link = tmp_path / "link"
    link.symlink_to(venv.parent)
    python = link / venv.name / "bin" / Path(sys.executable).name
    code = "from scdpo.sandbox import run_blocks; print(run_blocks(['1 + 1']))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "['2']", done.stderr[-2000:]


@needs_root
def test_a_venv_under_tmp_keeps_fresh_namespaces() -> None:
    """A checkout under /tmp (as CI may have it): the venv is bound into each child's new /tmp."""
    checkout = Path(tempfile.mkdtemp(prefix="scdpo-co-", dir="/tmp"))
    venv = checkout / ".venv"
    venv.mkdir()
    subprocess.run(["mount", "--bind", sys.prefix, str(venv)], check=True)
    try:
        code = (
            "from scdpo.sandbox import SandboxPool\nwith SandboxPool(workers=1) as p:\n"
            '    print(p.run([\'open("left", "w").write("x")\'])[0])\n'
            "    print(p.run(['import os\\nsorted(os.listdir(\"/tmp\"))'])[0])\n"
        )
        python = venv / "bin" / Path(sys.executable).name
        done = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=120, cwd="/tmp"
        )
        assert done.stdout.splitlines() == ["1", repr([checkout.name])], done.stderr[-2000:]
        assert "without private_mounts" not in done.stderr
    finally:
        subprocess.run(["umount", str(venv)], check=True)
        venv.rmdir()
        checkout.rmdir()
