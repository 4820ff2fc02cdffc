"""Sandbox round 3 (issue 29), the solutions' side: nothing one solution did is visible to the
next (network, pids, the worker's cgroup), outputs stay bounded whatever the child writes, and
the notebook repeats itself (random generators, addresses, `__main__`).
"""

from __future__ import annotations

import json
import random
import string

import pytest
from test_sandbox import BWRAP_PROBLEM, NORMAL, NORMAL_OUT, last_line
from test_sandbox_host import needs_root

from scdpo.sandbox import SandboxConfig, SandboxPool, _watch

pytestmark = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=str(BWRAP_PROBLEM))

TIMEOUT = 2.0
LIMIT = 2000  # the default max_output_chars


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout=TIMEOUT)) as p:
        assert p.run(NORMAL) == NORMAL_OUT
        yield p


def on_both_workers(pool: SandboxPool, blocks: list[str], seed: str = "s") -> list[list[str]]:
    """Run a solution often enough that each of the two workers runs it, some of them at once."""
    return [f.result() for f in [pool.submit(blocks, seed) for _ in range(6)]]


# ---------------------------------------------------------------- channels between solutions

NETWORK_TRACES = (
    "import socket\nserver = socket.create_server(('127.0.0.1', 0))\nfor _ in range(20):\n"
    "    c = socket.create_connection(server.getsockname())\n    a, _ = server.accept()\n"
    "    c.sendall(b'x' * 1000)\n    a.close()\n    c.close()\n"
    "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(b'x', ('127.0.0.1', 9))\n"
    "n = socket.socket(socket.AF_UNIX)\nn.bind('\\0scdpo-left-behind')\nn.listen()"
)
NETWORK_VIEW = (
    "import socket\ntcp = open('/proc/net/tcp').read().splitlines()\n"
    "snmp = open('/proc/net/snmp').read()\nn = socket.socket(socket.AF_UNIX)\n"
    "n.bind('\\0scdpo-left-behind')\nlen(tcp), hash(snmp), 'bound'"
)


@needs_root
def test_the_next_solution_sees_nothing_of_the_network(pool: SandboxPool) -> None:
    """TIME_WAIT ports in /proc/net/tcp, /proc/net/snmp counters, abstract unix sockets: each
    solution has a network namespace of its own."""
    fresh = on_both_workers(pool, [NETWORK_VIEW])
    for _ in range(2):
        assert on_both_workers(pool, [NETWORK_TRACES]) == [[""]] * 6
        assert on_both_workers(pool, [NETWORK_VIEW]) == fresh
    assert fresh[0][0].startswith("(1, ")  # the header line of /proc/net/tcp, nothing else


PIDS = (
    "import os\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
    "        os._exit(0)\n    kids.append(pid)\n    os.waitpid(pid, 0)\nos.getpid(), kids"
)
LEAVE_PROCESSES = (
    "import os, time\nfor _ in range(30):\n    if os.fork() == 0:\n        os.setsid()\n"
    "        time.sleep(60)\n1"
)


@needs_root
def test_pids_start_the_same_for_every_solution(pool: SandboxPool) -> None:
    first = on_both_workers(pool, [PIDS])
    assert on_both_workers(pool, [LEAVE_PROCESSES]) == [["1"]] * 6
    assert on_both_workers(pool, ["while True: pass"])[0][0].startswith("TimeoutError")
    assert on_both_workers(pool, [PIDS]) == first == [first[0]] * 6
    crashed = pool.run(["import os\nos._exit(1)", PIDS], seed="s")  # a fresh child, same pids
    assert crashed[1] == first[0][0]


@needs_root
def test_proc_shows_only_the_solutions_own_processes(pool: SandboxPool) -> None:
    code = (
        "import os\nif os.fork() == 0:\n    import time\n    time.sleep(60)\n"
        "sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [os.getpid(), "
        "os.getpid() + 1], os.path.exists('/proc/1/stat')"
    )
    assert on_both_workers(pool, [code]) == [["(True, False)"]] * 6


@needs_root
def test_the_workers_cgroup_files_are_out_of_reach(pool: SandboxPool) -> None:
    """Peak usage and OOM kills of earlier solutions are in them."""
    code = "import os\ntry:\n    os.listdir('/run/scdpo')\nexcept OSError as e:\n    print(e.errno)"
    assert on_both_workers(pool, [code]) == [["13\n"]] * 6  # EACCES


# ---------------------------------------------------------------- output bounds

FORGE = (
    "import os, json, struct\nframe = json.dumps({FIELDS}).encode()\n"
    "os.write(3, struct.pack('>I', len(frame)) + frame)"
)
FORGERIES = [
    "{'i': 1, 'text': 'T' * 10, 'n': 10**6, 'last': 'E' * 30000, 'at': 0}",
    "{'i': 1, 'text': 'T' * 12000, 'n': 12000, 'last': '\\n' * 20000, 'at': 5}",
    "{'i': 1, 'text': '', 'n': 10**30, 'last': 'x\\ny' * 5000, 'at': 10**29}",
    "{'i': 1, 'text': 'T' * 15000, 'n': 15000, 'last': '', 'at': 15000}",
]


@pytest.mark.parametrize("fields", FORGERIES)
def test_a_forged_result_frame_is_bounded(pool: SandboxPool, fields: str) -> None:
    """The worker builds and bounds every field; the child may only forge its own output."""
    out = pool.run([FORGE.replace("{FIELDS}", fields), "print('next')"])
    assert all(len(o) <= LIMIT + 100 for o in out), [len(o) for o in out]
    assert out[1] == "next\n" or "broke the sandbox protocol" in out[1]
    assert pool.run(NORMAL) == NORMAL_OUT


@pytest.mark.parametrize(
    "message",
    ["'first line\\nsecond line'", "'a\\n' * 3000", "'x' * 30000 + '\\nend'", "'\\n\\nlate'"],
)
def test_a_truncated_error_always_ends_with_its_name(pool: SandboxPool, message: str) -> None:
    out = pool.run([f"print('o' * 5000)\nraise ValueError({message})"])[0]
    head, note = out.split("\n... [output truncated: ", 1)
    assert note.split("\n", 1)[1].startswith("ValueError: ")
    assert last_line(out).startswith("ValueError: ")
    assert len(out) <= LIMIT + 100


def test_compose_bounds_any_valid_frame() -> None:
    """Whatever a child sends that passes the checks, the output keeps its bounds."""
    rng = random.Random(29)
    alphabet = string.ascii_letters + "\n\r\t é"
    for _ in range(2000):
        text = "".join(rng.choices(alphabet, k=rng.choice([0, 10, 1999, 2001, 9000])))
        last = "".join(rng.choices(alphabet, k=rng.choice([0, 5, 999, 1001, 30000])))
        n = len(text) + rng.choice([0, 1, 5000, 10**9])
        result = {"i": 1, "text": text, "n": n, "last": last, "at": rng.randint(0, n)}
        assert _watch.valid_result(json.loads(json.dumps(result)), 1)
        out = "".join(rng.choices(alphabet, k=rng.choice([0, 100, 8000])))
        composed = _watch.compose(out, rng.choice([0, 0, 7]), result, LIMIT)
        assert len(composed) <= LIMIT + 60
        if "\n... [output truncated: " in composed and last:
            assert composed.endswith(_watch.one_line(last)[:20]) or last[:1] in composed


# ---------------------------------------------------------------- the notebook repeats

SYMPY_RNG = (
    "import sympy\nfrom sympy.core import random as sympy_random\n"
    "sympy.randprime(10**8, 10**9), sympy_random.random(), sympy_random.randint(0, 10**9), "
    "sympy.srepr(sympy.Dummy('x'))"
)


def test_sympys_own_generator_is_seeded_per_solution(pool: SandboxPool) -> None:
    runs = on_both_workers(pool, [SYMPY_RNG], seed="p-1")
    assert runs == [runs[0]] * 6
    assert pool.run([SYMPY_RNG], seed="p-2") != runs[0]
    assert pool.run([SYMPY_RNG, "1"], seed="p-1")[:1] == runs[0]  # a replay with more blocks


ADDRESSES = [
    "class A:\n    pass\na = A()\nprint(a, map(abs, [1]), object())\nhex(id(a))",
    "items = [A() for _ in range(40)]\n[items.index(x) for x in set(items)][:12]",
    "import tempfile\nsorted({A(): 1, A(): 2, A(): 3}.values()), tempfile.mktemp()",
]


def test_default_reprs_and_identity_order_repeat(pool: SandboxPool) -> None:
    """Address randomisation is off and the zygote's memory is the same at every fork: the
    same code gets the same addresses, on every worker, in every pool (whatever its settings),
    after anything."""
    runs = on_both_workers(pool, ADDRESSES)
    assert runs == [runs[0]] * 6
    for earlier in (["while True: pass"], ["import os\nos._exit(3)"], ["x = [0] * 10**6"]):
        pool.run(earlier)
        assert pool.run(ADDRESSES, seed="s") == runs[0]
    assert pool.run(ADDRESSES[:1], seed="s") == runs[0][:1]  # replays with fewer blocks
    assert pool.run(ADDRESSES[:2], seed="s") == runs[0][:2]
    other_config = SandboxConfig(timeout=TIMEOUT + 1.5, memory_mb=1500)  # other digits too
    with SandboxPool(workers=1, config=other_config) as other:
        assert other.run(ADDRESSES, seed="s") == runs[0]


def test_cells_run_in_main_so_pickling_and_pools_work(pool: SandboxPool) -> None:
    code = [
        "def square(x):\n    return x * x\nclass Point:\n    pass\n"
        "import __main__, pickle\n__name__, __main__.square is square, "
        "pickle.loads(pickle.dumps(square))(7), type(pickle.loads(pickle.dumps(Point())))",
        "import multiprocessing as mp\nwith mp.Pool(2) as workers:\n"
        "    print(workers.map(square, range(6)))",
    ]
    assert pool.run(code) == [
        "('__main__', True, 49, __main__.Point)",
        "[0, 1, 4, 9, 16, 25]\n",
    ]
    leftovers = "[k for k in globals() if not k.startswith('__')]"
    assert pool.run([leftovers]) == ["[]"]  # none of the worker's own names
