"""What the grader's hard time limit costs, in seconds (the tests check behaviour, not time).

    python perf/grading_limits.py

Prints, for 1 MB looping generations, the time of a verdict at a 1 s limit; the time of the verdict
that follows a timed-out one (a child forked from the warm zygote: milliseconds, not a cold
start); and how normalisation's and extraction's times grow with 4x the input (about 4x:
linear), for every rewrite that a looping generation could repeat.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_grading_limits import LIMIT, LOOPS, SLOW  # noqa: E402

from scdpo.grading import grade, normalize, predicted_answer  # noqa: E402
from scdpo.grading._pool import pool  # noqa: E402

GROWING = {
    "text units": "5" + r"\text{ cm}" * 20_000,
    "matrices": r"\begin{pmatrix}" * 20_000,
    "spaces": "1" + " " * 200_000 + "x",
    "chinese units": "1万" * 50_000,
    "chinese numerals": "二十" * 50_000,
}
# Issue 28's passes, normalised or extracted, each repeated (a looping generation).
N = 2_500
NORMALISED = {
    "decimal points": "1.1" * N,
    "repeating": r"0.\overline{3}" * N,
    "dots": r"0.\dot{3}" * N,
    "ellipsis": "0." + "3" * N + "...",
    "units": "12 apples per " * N,
    "unit parentheses": "12（个）" * N,
    "scale words": "5 million " * N,
    "scientific": "2.5e-3 " * N,
    "times ten": r"2\times10^{3}" * N,
    "labels": "第一" * N,
    "mixed": "一又" * N,
    "fractions": "3分之" * N,
    "approx": r"\approx 3" * N,
    "arrays": r"\left(\begin{array}{c}1" * N,
    "python": "pi**" * N,
    "temperatures": "5°C " * N,
}
EXTRACTED = {
    "non-answers": "The answer is consistent. " * N,
    "chinese statements": "答案是" * N,
    "named boxes": r"x = \boxed{5} and " * N,
    "final answers": "Final Answer: " * N,
    "code blocks": "<|text|>a<|endofblock|><|execution|>5<|endofblock|>" * N,
}


def seconds(call, *args, **kwargs) -> float:
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


def best_of_three(run, text: str) -> float:
    """The machine is shared: a neighbour's burst is not ours."""
    return min(seconds(run, text) for _ in range(3))


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
    print("time for 4x the input / 1x (linear: about 4; best of three runs each):")
    worst = 0.0
    passes = [(normalize, GROWING), (normalize, NORMALISED), (predicted_answer, EXTRACTED)]
    for run, texts in passes:
        for name, text in texts.items():
            ratio = best_of_three(run, text * 4) / max(best_of_three(run, text), 1e-6)
            worst = max(worst, ratio)
            print(f"  {run.__name__:16s} {name:18s} {ratio:5.1f}")
    print(f"worst growth for 4x the input: {worst:.1f}x")


if __name__ == "__main__":
    main()
