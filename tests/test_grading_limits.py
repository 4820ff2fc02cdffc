"""The hard time limit over a whole verdict, linear-time normalisation, and the persistent pool."""

from __future__ import annotations

import logging
import time

import pytest

from scdpo.grading import grade, grade_many, normalize, stats
from scdpo.grading.symbolic import pool

LIMIT = 1.0
MB = 1_000_000

# Looping generations of about 1 MB, each repeating a form that normalisation rewrites.
LOOPS = {
    "text units": r"\boxed{5" + r"\text{ cm}" * (MB // 10) + "}",
    "matrices": r"\boxed{" + r"\begin{pmatrix}1\\2" * (MB // 18) + "}",
    "chinese": "答：" + "共有12个，又多3万" * (MB // 30),
    "nested boxes": r"\boxed{" * (MB // 7) + "5" + "}" * (MB // 7),
    "digits": r"\boxed{" + "1" * MB + "}",
    "boxes in a row": r"\boxed{5}, " * (MB // 11),
    "plain loop": "So the answer is 5. " * (MB // 20),
}


@pytest.fixture(scope="module", autouse=True)
def _warm_worker() -> None:
    grade("x+1", "1+x")  # start the worker outside the timed regions


@pytest.mark.parametrize("name", LOOPS)
def test_looping_answer_within_limit(name: str) -> None:
    start = time.monotonic()
    assert grade(LOOPS[name], "7", timeout=LIMIT) is False
    assert time.monotonic() - start < 1.5 * LIMIT
    start = time.monotonic()
    grade(LOOPS[name], "5", timeout=LIMIT)  # `5 cm cm ...` is 5: a verdict either way, in time
    assert time.monotonic() - start < 1.5 * LIMIT


@pytest.mark.parametrize(
    "text",
    [
        "5" + r"\text{ cm}" * 20_000,  # the example: 56.7 s before
        r"\begin{pmatrix}" * 20_000,
        "1" + " " * 200_000 + "x",
        "1万" * 50_000,
        "二十" * 50_000,
    ],
)
def test_normalisation_is_linear(text: str) -> None:
    start = time.monotonic()
    normalize(text)
    small = time.monotonic() - start
    start = time.monotonic()
    normalize(text * 4)
    assert time.monotonic() - start < 8 * small + 0.2  # 4x the input, not 16x the time


def test_timeout_is_counted_and_logged_with_item_id(caplog: pytest.LogCaptureFixture) -> None:
    before = stats.timeouts
    items = [
        ("1", "1", "a"),
        (r"9^{9^{9^{9}}}", "1", "item-slow"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", "c"),
        ("3", "4", "d"),
    ]
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="scdpo.grading"):
        assert grade_many(items, timeout=LIMIT) == [True, False, True, False]
    assert time.monotonic() - start < 1.5 * LIMIT + 3  # + the replacement worker's start-up
    assert stats.timeouts == before + 1
    assert stats.timed_out[-1] == "item-slow"
    assert "item item-slow" in caplog.text


def test_grade_reports_its_item_id(caplog: pytest.LogCaptureFixture) -> None:
    grade("x+1", "1+x")  # the replacement worker is ready
    with caplog.at_level(logging.WARNING, logger="scdpo.grading"):
        assert grade(r"9^{9^{9^{9}}}", "1", timeout=LIMIT, item_id="q17/s3") is False
    assert "item q17/s3" in caplog.text


def test_pool_persists_across_calls() -> None:
    items = [(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), ("x+1", "1+x"), ("x^2", "x*x")]
    assert grade_many(items, processes=2) == [True, True, True]
    pids = {w.proc.pid for w in pool(2).workers}
    start = time.monotonic()
    assert grade_many(items * 2, processes=2) == [True] * 6
    assert time.monotonic() - start < 1.0  # no new pool: no sympy import
    assert {w.proc.pid for w in pool(2).workers} == pids
