"""Issue 28's new passes stay linear in the text's length: looping generations of each new form
(units, scale words, repeating decimals, labels, answer statements, named boxes, code blocks)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from scdpo.grading import normalize, predicted_answer

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


def _seconds(run: Callable[[str], object], text: str) -> float:
    """The best of three runs: the machine is shared, a neighbour's burst is not ours."""
    times = []
    for _ in range(3):
        start = time.monotonic()
        run(text)
        times.append(time.monotonic() - start)
    return min(times)


def _linear(run: Callable[[str], object], text: str) -> None:
    small = _seconds(run, text)
    assert _seconds(run, text * 4) < 8 * small + 0.2  # 4x the input, not 16x the time


@pytest.mark.parametrize("name", NORMALISED)
def test_normalisation_linear(name: str) -> None:
    _linear(normalize, NORMALISED[name])


@pytest.mark.parametrize("name", EXTRACTED)
def test_extraction_linear(name: str) -> None:
    _linear(predicted_answer, EXTRACTED[name])
