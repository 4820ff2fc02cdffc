"""The hard time limit over a whole verdict, and the pool of forked verdict children.

No assertion here is on elapsed time (a slower or busier machine would miss it): a limit is
checked by what it does (the verdict counts as not equal, is counted and logged, the child is
replaced by a fork of the same warm zygote). `perf/grading_limits.py` measures the times:
verdicts at their limit, the verdict after a timeout, normalisation's growth with the input.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scdpo.grading import _INLINE_LENGTH, _prepare, grade, grade_many, stats
from scdpo.grading._pool import pool

LIMIT = 1.0
MB = 1_000_000
SLOW = r"9^{9^{9^{9}}}"  # sympy never finishes it: every verdict on it hits its limit

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


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@pytest.fixture(scope="module", autouse=True)
def _warm_pool() -> None:
    pool(1).warm()


@pytest.mark.parametrize("name", LOOPS)
def test_a_looping_answer_goes_whole_to_the_child(name: str) -> None:
    # The caller extracts (linear) and decides short answers only; normalising a long one is the
    # child's work, under the limit.
    verdict, (answer, _) = _prepare(LOOPS[name], "7")
    assert verdict is None or len(answer) <= _INLINE_LENGTH
    assert grade(LOOPS[name], "7", timeout=LIMIT) is False


def test_a_timed_out_verdict_is_counted_logged_and_its_child_replaced_warm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = pool(1)
    zygote, (child,) = shared.zygote.proc.pid, [w.pid for w in shared.workers]
    before = stats.timeouts
    with caplog.at_level(logging.WARNING, logger="scdpo.grading"):
        assert grade(SLOW, "1", timeout=LIMIT, item_id="q17/s3") is False
        assert grade(SLOW, "1", timeout=LIMIT, item_id="q17/s4") is False  # twice in a row
    assert stats.timeouts == before + 2
    assert list(stats.timed_out)[-2:] == ["q17/s3", "q17/s4"]
    assert "item q17/s3" in caplog.text and "counted as not equal" in caplog.text
    # The replacement is already there, forked from the same warm zygote: no cold start.
    (replacement,) = [w.pid for w in shared.workers]
    assert replacement != child
    assert shared.zygote.proc.pid == zygote and int(_stat(replacement)[1]) == zygote
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")  # and it answers


def test_a_timeout_never_blocks_the_other_items(caplog: pytest.LogCaptureFixture) -> None:
    before = stats.timeouts
    items = [
        ("1", "1", "a"),
        (SLOW, "1", "item-slow"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", "c"),
        ("3", "4", "d"),
    ]
    with caplog.at_level(logging.WARNING, logger="scdpo.grading"):
        assert grade_many(items, timeout=LIMIT) == [True, False, True, False]
    assert stats.timeouts == before + 1
    assert stats.timed_out[-1] == "item-slow"
    assert "item item-slow" in caplog.text


def _wait_gone(pid: int) -> None:
    """Until the zygote has reaped a killed child (it ignores SIGCHLD: the kernel reaps)."""
    while Path(f"/proc/{pid}").exists():
        time.sleep(0.01)


def test_a_child_that_dies_idle_is_replaced_and_the_job_kept() -> None:
    shared = pool(1)
    (child,) = shared.workers
    os.kill(child.pid, signal.SIGKILL)
    _wait_gone(child.pid)
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}") is True
    assert [w.pid for w in shared.workers] != [child.pid]


def test_a_child_that_dies_under_its_job_counts_as_not_equal() -> None:
    shared = pool(1)
    (child,) = shared.workers
    before = stats.timeouts
    verdict = ThreadPoolExecutor(1).submit(grade, SLOW, "1", timeout=600.0)
    while _stat(child.pid)[0] != "R":  # until the child works on the job (it waits in S)
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    assert verdict.result() is False
    assert stats.timeouts == before  # not a timeout: the child died
    assert [w.pid for w in shared.workers] != [child.pid]
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}") is True


def test_a_zygote_that_dies_is_started_again() -> None:
    shared = pool(1)
    old = shared.zygote.proc.pid
    shared.zygote.proc.kill()
    shared.zygote.proc.wait()
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}") in (True, False)  # never raises
    assert grade(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}") is True
    assert shared.zygote.proc.pid != old


def test_pool_persists_across_calls() -> None:
    items = [(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), ("x+1", "1+x"), ("x^2", "x*x")]
    assert grade_many(items, processes=2) == [True, True, True]
    pids = {w.pid for w in pool(2).workers}
    zygote = pool(2).zygote.proc.pid
    assert grade_many(items * 2, processes=2) == [True] * 6
    assert {w.pid for w in pool(2).workers} == pids and pool(2).zygote.proc.pid == zygote
