"""Grading throughput on a realistic mix built from the benchmark files.

The mix imitates what the pipeline grades: generated solutions whose final answer is mostly the
reference written the same way, sometimes written differently (symbolic cases, several values,
`####` and `答：` lines) or wrong. Measured: `grade` one verdict at a time (per-verdict wall times,
fresh caches), then `grade_many` in batches of 1,000 with 1 and with 2 worker processes (pools
started once, outside the timed region, as in a sampling shard; best of two runs).

    python perf/grading_throughput.py [BENCHMARK_DIR]

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
    grade,
    grade_many,
    normalize,
    predicted_answer,
    reference_answer,
)
from scdpo.grading._pool import close_pools, pool
from scdpo.grading.compare import NeedsSymbolic, decide, fast_only
from scdpo.grading.normalize import _normalize_cached, numeric_value

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
    if "," in answer and "\\begin" not in answer and not answer.startswith(("(", "[")):
        return ", ".join(f"x = {part.strip()}" for part in answer.split(",")[::-1])
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
            if name == "gsm8k_test":
                mix.append((f"Step 1.\nStep 2.\n#### {ref}", ref))
            elif name != "math500_test":  # the Chinese sets: an answer sentence
                mix.append((f"解：先算。\n答：一共是{ref}。", ref))
            mix.append((_solution(refs[(i + 1) % len(refs)]), ref))
            if name == "math500_test":  # harder data gets more varied answers
                mix.append((record["extra"]["solution"], ref))
                mix.append((_solution(_variant(ref, rng)), ref))
                mix.append((_solution(refs[(i + 2) % len(refs)]), ref))
    rng.shuffle(mix)
    return mix


def _needs_sympy(solution: str, reference: str) -> bool:
    try:
        decide(predicted_answer(solution) or "", reference, fast_only)
    except NeedsSymbolic:
        return True
    return False


def _fresh(processes: int) -> None:
    """Fresh caches here and in the workers; the pool started outside the timed region."""
    close_pools()
    pool(processes).warm()
    _normalize_cached.cache_clear()
    numeric_value.cache_clear()


def _batched(mix: list[tuple[str, str]], processes: int, size: int = 1000) -> float:
    """Verdicts/s of `grade_many` over the mix in batches, fresh caches; the best of two runs
    (the machine is shared: the other run measures its neighbours)."""
    rates = []
    for _ in range(2):
        _fresh(processes)
        start = time.perf_counter()
        for i in range(0, len(mix), size):
            grade_many(mix[i : i + size], processes=processes)
        rates.append(len(mix) / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    mix = build_mix(directory)
    _fresh(1)
    times, correct = [], 0
    for solution, reference in mix:
        start = time.perf_counter()
        correct += grade(solution, reference)
        times.append(time.perf_counter() - start)
    total = sum(times)
    symbolic = sum(_needs_sympy(*item) for item in mix)
    slow = sorted(times)[-3:]
    print(
        f"mix: {len(mix)} verdicts, {correct} judged equal, "
        f"{symbolic} ({symbolic / len(mix):.1%}) needing sympy, {total:.2f} s graded"
    )
    print(f"slowest verdicts: {', '.join(f'{t:.3f} s' for t in reversed(slow))}")
    print(f"grade, one call per verdict: {len(mix) / total:.0f} verdicts/s")
    rates = {processes: _batched(mix, processes) for processes in (1, 2)}
    print(
        f"grading: {rates[1]:.0f} verdicts/s with 1 process, {rates[2]:.0f} with 2 "
        f"(grade_many, batches of 1,000; max verdict {max(times):.2f} s, "
        f"limit {DEFAULT_TIMEOUT:.1f} s)"
    )


if __name__ == "__main__":
    main()
