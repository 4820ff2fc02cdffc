"""What the grader's hard time limit costs, in seconds (the tests check behaviour, not time).

    python benchmarks/grading_limits.py

Prints, for 1 MB looping generations, the time of a verdict at a 1 s limit; the time of the verdict
that follows a timed-out one (a child forked from the warm zygote: milliseconds, not a cold
start); and how normalisation's time grows with 4x the input (about 4x: linear).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_grading_limits import LIMIT, LOOPS, SLOW  # noqa: E402

from scdpo.grading import grade, normalize  # noqa: E402
from scdpo.grading._pool import pool  # noqa: E402

GROWING = {
    "text units": "5" + r"\text{ cm}" * 20_000,
    "matrices": r"\begin{pmatrix}" * 20_000,
    "spaces": "1" + " " * 200_000 + "x",
    "chinese units": "1万" * 50_000,
    "chinese numerals": "二十" * 50_000,
}


def seconds(call, *args, **kwargs) -> float:
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    pool(1).warm()
    print(f"verdicts on 1 MB looping answers at a {LIMIT:.0f} s limit (wrong, then right):")
    for name, text in LOOPS.items():
        wrong = seconds(grade, text, "7", timeout=LIMIT)
        right = seconds(grade, text, "5", timeout=LIMIT)
        print(f"  {name:15s} {wrong:6.2f} s {right:6.2f} s")
    seconds(grade, SLOW, "1", timeout=LIMIT)
    after = seconds(grade, r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")
    print(f"the verdict after a timed-out one: {after * 1000:.0f} ms")
    print("normalisation time, 4x the input / 1x (linear: about 4):")
    worst = 0.0
    for name, text in GROWING.items():
        ratio = seconds(normalize, text * 4) / max(seconds(normalize, text), 1e-6)
        worst = max(worst, ratio)
        print(f"  {name:16s} {ratio:5.1f}")
    print(f"worst normalisation growth for 4x the input: {worst:.1f}x")


if __name__ == "__main__":
    main()
