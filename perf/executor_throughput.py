"""Solutions/s of the sandboxed pool against the seed's kernel-per-solution executor.

Both run the same typical 3-block solution (as ../shared/bench/seed_kernel_baseline.py) in the
same run. Ours is the default pool (`SandboxPool()`: 2 workers, default `SandboxConfig`, every
protection of docs/sandbox.md on), timed once all workers are up; the last line printed is the
ratio, e.g. `speedup: 120x (ours 130.0/s, seed 1.08/s)`.

    python perf/executor_throughput.py [--solutions 600] [--baseline 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

from jupyter_client.manager import start_new_kernel

from scdpo.sandbox import SandboxPool

BLOCKS = ["a = 48 * 0.25\na", "b = a + 15\nb", "print(round(b))"]
EXPECTED = ["12.0", "27.0", "27\n"]


def ours(n: int, workers: int) -> float:
    """Solutions/s with pre-started workers; all solutions submitted at once, as the loop does."""
    with SandboxPool(workers=workers) as pool:
        assert pool.wait_started(timeout=300)  # time the pool, not its start
        warm = [pool.submit(BLOCKS) for _ in range(workers * 8)]
        assert all(f.result() == EXPECTED for f in warm)
        start = time.perf_counter()
        futures = [pool.submit(BLOCKS) for _ in range(n)]
        assert all(f.result() == EXPECTED for f in futures)
        return n / (time.perf_counter() - start)


def seed_run_code(client, code: str) -> str:
    client.execute(code, allow_stdin=False)
    out = ""
    while True:
        msg = client.get_iopub_msg(timeout=10)
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return out
        if kind == "stream":
            out += content["text"]
        elif kind == "execute_result":
            out += content["data"]["text/plain"]


def seed_solution() -> list[str]:
    manager, client = start_new_kernel(kernel_name="python3")
    outputs = [seed_run_code(client, b) for b in BLOCKS]
    client.stop_channels()
    manager.shutdown_kernel()
    return outputs


def seed(n: int) -> float:
    assert seed_solution() == EXPECTED
    start = time.perf_counter()
    for _ in range(n):
        seed_solution()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solutions", type=int, default=600, help="solutions for our pool")
    parser.add_argument("--baseline", type=int, default=4, help="solutions for the seed")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rate = ours(args.solutions, args.workers)
    print(f"sandbox pool ({args.workers} workers): {args.solutions} solutions, {rate:.1f}/s")
    base = seed(args.baseline)
    print(f"seed-style kernel per solution: {args.baseline} solutions, {base:.2f}/s")
    print(f"speedup: {rate / base:.0f}x (ours {rate:.1f}/s, seed {base:.2f}/s)")


if __name__ == "__main__":
    main()
