"""Answer grading: one grader for preference labels and every reported accuracy.

`grade(solution, reference)` extracts the final answer (last `\\boxed{}`, a `####` line, a
`答：` line, or a bare answer), normalises both sides, compares single values and answers with
several values, decides the common cases in-process, and sends the rest, whole, to a worker
process that runs math-verify (pinned 0.9.0) under a hard wall-clock limit. See docs/grading.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Sequence

from scdpo.grading._pool import pool, stats, verify_with_limit
from scdpo.grading.compare import NeedsSymbolic, decide, fast_only, fast_verdict
from scdpo.grading.extract import extract_answer, gsm8k_answer, predicted_answer, reference_answer
from scdpo.grading.normalize import normalize, repair_quirks
from scdpo.grading.symbolic import verify_in_process

__all__ = [
    "DEFAULT_TIMEOUT",
    "extract_answer",
    "fast_verdict",
    "grade",
    "grade_many",
    "gsm8k_answer",
    "normalize",
    "predicted_answer",
    "reference_answer",
    "repair_quirks",
    "stats",
    "verify_in_process",
]

logger = logging.getLogger("scdpo.grading")

DEFAULT_TIMEOUT = 5.0
# Longer answers (looping generations) are never normalised in the caller: the worker does it
# under the time limit. Below this, every in-process step is bounded by the length.
_INLINE_LENGTH = 2000


def _fast(answer: str, reference: str) -> bool | None:
    """The in-process verdict on an extracted answer, or None when the worker must decide."""
    if len(answer) > _INLINE_LENGTH or len(reference) > _INLINE_LENGTH:
        return None
    try:
        return decide(answer, reference, fast_only)
    except NeedsSymbolic:
        return None


def _prepare(solution: str, reference: str) -> tuple[bool | None, tuple[str, str]]:
    """(fast verdict or None, the (answer, reference) job for a worker)."""
    answer = predicted_answer(solution)
    if answer is None:
        return False, ("", "")
    return _fast(answer, reference), (answer, reference)


def grade(
    solution: str,
    reference: str,
    timeout: float = DEFAULT_TIMEOUT,
    item_id: Hashable = None,
) -> bool:
    """A whole solution text (its final answer) or a bare answer, against a reference answer.

    Never raises. The verdict takes at most about `timeout` seconds in all (extraction included,
    a worker's start-up not): over it, it counts as False and is logged with `item_id`.
    """
    start = time.monotonic()
    try:
        verdict, job = _prepare(solution, reference)
        if verdict is not None:
            return verdict
        left = max(0.05, timeout - (time.monotonic() - start))
        return verify_with_limit(*job, left, item_id)
    except Exception:  # noqa: BLE001 - a grader error must not stop the pipeline
        logger.exception("item %s: grading failed; counted as not equal", item_id)
        return False


def grade_many(
    items: Iterable[Sequence],
    processes: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[bool]:
    """Grade (solution, reference) or (solution, reference, item_id) items, order preserved.

    The fast path runs here; the items it cannot decide go to a persistent pool of `processes`
    workers (reused by later calls). A verdict over `timeout` seconds counts as False and is
    logged with its item id (its index in `items` when none is given); it never blocks the rest.
    """
    items = list(items)
    results: list[bool] = []
    pending: list[int] = []
    try:
        with pool(max(1, processes)).batch(timeout) as batch:
            for index, (solution, reference, *rest) in enumerate(items):
                verdict, job = _prepare_logged(solution, reference, index)
                results.append(bool(verdict))
                if verdict is None:  # the workers start on it while the fast path goes on
                    pending.append(index)
                    batch.submit(job, rest[0] if rest else index)
            verdicts = batch.finish()
    except Exception:  # noqa: BLE001 - e.g. a worker that cannot start
        logger.exception("symbolic grading failed; %d verdicts counted as not equal", len(pending))
        for index in range(len(results), len(items)):  # the items after the failure
            verdict, _ = _prepare_logged(*items[index][:2], index)
            results.append(bool(verdict))
            if verdict is None:
                pending.append(index)
        verdicts = [False] * len(pending)
    for index, verdict in zip(pending, verdicts, strict=True):
        results[index] = verdict
    return results


def _prepare_logged(
    solution: str, reference: str, index: int
) -> tuple[bool | None, tuple[str, str]]:
    try:
        return _prepare(solution, reference)
    except Exception:  # noqa: BLE001
        logger.exception("item %s: grading failed; counted as not equal", index)
        return False, ("", "")
