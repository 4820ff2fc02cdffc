"""Grading throughput on a realistic mix built from the benchmark files.

The mix imitates what the pipeline grades: generated solutions whose last box is mostly the
reference written the same way, sometimes written differently (symbolic cases) or wrong.
One process, one worker (one core at a time); per-verdict wall times, fresh caches.

    python benchmarks/grading_throughput.py [BENCHMARK_DIR]

The last line printed is the headline figure.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from scdpo.grading import (
    DEFAULT_TIMEOUT,
    fast_verdict,
    grade,
    normalize,
    predicted_answer,
    reference_answer,
)
from scdpo.grading.normalize import numeric_value

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared/data/benchmarks"
DATASETS = ("gsm8k_test", "math500_test", "cmath_test", "mgsm_zh_test", "ape500_test")


def _load(directory: Path, name: str) -> list[dict]:
    with open(directory / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _solution(answer: str) -> str:
    """A generated solution in the pipeline's block format ending in a box."""
    return (
        "<|text|>Let us compute step by step.<|endofblock|>"
        "<|code|>print(1 + 1)<|endofblock|><|execution|>2<|endofblock|>"
        f"<|text|>So the answer is $\\boxed{{{answer}}}$.<|endofblock|><|endofmessage|>"
    )


def _swap_terms(answer: str) -> str | None:
    """`a+b` as `b+a` (top-level terms only): the rewrite that only sympy can judge."""
    if any(mark in answer for mark in ("=", ",", "\\begin", "\\\\")):  # lists, matrices
        return None
    depth = 0
    for i, ch in enumerate(answer):
        depth += ch in "{([" and 1 or ch in "})]" and -1 or 0
        if depth == 0 and i > 0 and ch in "+-" and answer[i - 1] not in "^_{(":
            left, right = answer[:i], answer[i + 1 :]
            return f"{right}+{left}" if ch == "+" else f"-{right}+{left}"
    return None


def _variant(answer: str, rng: random.Random) -> str:
    """The same answer written another way, as models do."""
    value = numeric_value(normalize(answer))
    if value is not None and value.value.denominator == 1 and not value.percent:
        n = value.value.numerator
        return rng.choice([f"{n}.00", f"\\${n}", f"{n} \\text{{ units}}", f"{n:,}"])
    if value is not None:
        return f"\\frac{{{value.value.numerator}}}{{{value.value.denominator}}}"
    return _swap_terms(answer) or answer.replace("\\frac", "\\dfrac").replace(",", ", ")


def build_mix(directory: Path, seed: int = 0) -> list[tuple[str, str]]:
    """About 70% exact, 15% written differently, 15% wrong; MATH500 solutions as written."""
    rng = random.Random(seed)
    mix: list[tuple[str, str]] = []
    for name in DATASETS:
        records = _load(directory, name)
        refs = [reference_answer(r, name) for r in records]
        for i, (record, ref) in enumerate(zip(records, refs, strict=True)):
            mix.extend([(_solution(ref), ref)] * 4)
            mix.append((_solution(_variant(ref, rng)), ref))
            mix.append((_solution(refs[(i + 1) % len(refs)]), ref))
            if name == "math500_test":  # harder data gets more varied answers
                mix.append((record["extra"]["solution"], ref))
                mix.append((_solution(_variant(ref, rng)), ref))
                mix.append((_solution(refs[(i + 2) % len(refs)]), ref))
    rng.shuffle(mix)
    return mix


def _normalised(solution: str, reference: str) -> tuple[str, str]:
    return normalize(predicted_answer(solution) or ""), normalize(reference)


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    mix = build_mix(directory)
    grade("1", "\\sqrt{1}")  # start the math-verify worker outside the timed region
    normalize.cache_clear()
    numeric_value.cache_clear()
    times, correct = [], 0
    for solution, reference in mix:
        start = time.perf_counter()
        correct += grade(solution, reference)
        times.append(time.perf_counter() - start)
    total = sum(times)
    symbolic = sum(fast_verdict(*_normalised(*item)) is None for item in mix)
    slow = sorted(times)[-3:]
    print(
        f"mix: {len(mix)} verdicts, {correct} judged equal, "
        f"{symbolic} ({symbolic / len(mix):.1%}) needing sympy, {total:.2f} s graded"
    )
    print(f"slowest verdicts: {', '.join(f'{t:.3f} s' for t in reversed(slow))}")
    print(
        f"grading: {len(mix) / total:.0f} verdicts/s per core "
        f"(max verdict {max(times):.2f} s, limit {DEFAULT_TIMEOUT:.1f} s)"
    )


if __name__ == "__main__":
    main()
