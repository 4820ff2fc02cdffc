"""Answer grading: one grader for preference labels and every reported accuracy.

`grade(solution, reference)` extracts the final answer (last `\\boxed{}`), normalises both sides,
decides the common cases in-process (exact string, exact numeric value), and only sends the
rest to math-verify (pinned 0.9.0, gold always wrapped) in a worker process under a hard time
limit. See docs/grading.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from scdpo.grading.extract import extract_answer, gsm8k_answer, reference_answer
from scdpo.grading.normalize import normalize, numeric_value, numeric_verdict, repair_quirks
from scdpo.grading.symbolic import SymbolicPool, verify_in_process, verify_with_limit

__all__ = [
    "DEFAULT_TIMEOUT",
    "extract_answer",
    "fast_verdict",
    "grade",
    "grade_many",
    "normalize",
    "predicted_answer",
    "reference_answer",
    "repair_quirks",
    "verify_in_process",
]

logger = logging.getLogger("scdpo.grading")

DEFAULT_TIMEOUT = 5.0
_MARKER = "<|"  # pipeline block markers: a text carrying them is a solution, not a bare answer


def predicted_answer(solution: str) -> str | None:
    """The last box of a solution; a GSM8K `#### N` line; else the text itself as a bare answer."""
    if "\\boxed" in solution or "\\fbox" in solution:
        return extract_answer(solution)  # None when the last box is unclosed (truncated)
    if "####" in solution:
        return gsm8k_answer(solution)
    if _MARKER in solution or "\n" in solution.strip():
        return None  # a whole solution without a final answer
    return solution


def _value_side(pred: str, ref: str) -> str | None:
    """The part of a predicted `lhs = rhs` to compare with a gold that has no `=`.

    `2+3=5` and chains `A=\\pi r^2=4\\pi` are read as their last side (single-variable `x = 5` was
    already reduced by normalisation), but one equation in variables such as `10x-4y-5z-20=0` is
    not a value: math-verify would compare its right side 0 with the gold, so it is ruled out here
    (None).
    """
    if "=" not in pred or "=" in ref or any(op in pred for op in ("<", ">", "\\le", "\\ge")):
        return pred
    lhs, rhs = pred.rsplit("=", 1)
    free = re.sub(r"\\[a-zA-Z]+", "", lhs)  # command names (\frac, \pi) are not variables
    return None if "=" not in lhs and re.search(r"[a-zA-Z]", free) else rhs


def _not_a_number(answer: str) -> bool:
    """True for answers that can never equal a plain number: lists, tuples, intervals, matrices,
    and expressions in variables (`e` and `i` excepted: they may be the constants)."""
    if "," in answer or "\\begin{" in answer:
        return True
    letters = set(re.findall(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", answer)))
    return bool(letters - {"e", "i"})


# Relations, \pm and infinite sets let math-verify equate a one-part answer with a list or an
# interval (`x\ge2` with `[2,\infty)`, `1\pm\sqrt{5}` with two roots): no shape for those.
_SHAPELESS_RE = re.compile(r"[<>=]|\\(?:le|ge|in|pm|mp|mathbb|emptyset|varnothing|cup|cap)")


def _shape(answer: str) -> str | None:
    """'matrix', 'list' (top-level comma: tuple, set, interval) or 'one'; None if unsure."""
    if _SHAPELESS_RE.search(answer):
        return None
    if "matrix}" in answer:
        return "matrix"
    return "list" if "," in answer else "one"


def fast_verdict(pred: str, ref: str) -> bool | None:
    """Verdict on normalised answers without sympy, or None when symbolic comparison is needed."""
    if pred == ref:
        return True
    if not pred or not ref:
        return False
    pred_value, ref_value = numeric_value(pred), numeric_value(ref)
    if pred_value is not None and ref_value is not None:
        return numeric_verdict(pred_value, ref_value)
    if pred_value is not None or ref_value is not None:
        return False if _not_a_number(ref if pred_value is not None else pred) else None
    if _shape(pred) != _shape(ref):
        return False
    if len(ref) == 1 and ref.isalpha() and len(pred) == 1:
        return False  # two different choice letters
    return None


def _prepare(solution: str, reference: str) -> tuple[bool | None, tuple[str, str]]:
    """(fast verdict or None, the normalised (gold, pred) pair for math-verify)."""
    answer = predicted_answer(solution)
    if answer is None:
        return False, ("", "")
    ref = normalize(reference)
    pred = _value_side(normalize(answer), ref)
    if pred is None:
        return False, ("", "")
    return fast_verdict(pred, ref), (ref, pred)


def grade(solution: str, reference: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """A whole solution text (its last box) or a bare answer, against a reference answer.

    Never raises; a verdict that would take longer than `timeout` seconds counts as False.
    """
    try:
        verdict, job = _prepare(solution, reference)
        if verdict is not None:
            return verdict
        return verify_with_limit(*job, timeout)
    except Exception:  # noqa: BLE001 - a grader error must not stop the pipeline
        logger.exception("grading failed; counted as not equal")
        return False


def grade_many(
    items: Iterable[tuple[str, str]], processes: int = 1, timeout: float = DEFAULT_TIMEOUT
) -> list[bool]:
    """Grade (solution, reference) pairs, order preserved.

    The fast path runs here; only the pairs it cannot decide go to `processes` math-verify worker
    processes. A verdict over `timeout` seconds counts as False and is logged.
    """
    results: list[bool] = []
    pending: list[tuple[int, tuple[str, str]]] = []
    for index, (solution, reference) in enumerate(items):
        try:
            verdict, job = _prepare(solution, reference)
        except Exception:  # noqa: BLE001
            logger.exception("grading failed; counted as not equal")
            verdict, job = False, ("", "")
        results.append(bool(verdict))
        if verdict is None:
            pending.append((index, job))
    if pending:
        try:
            verdicts = _run_symbolic(pending, processes, timeout)
        except Exception:  # noqa: BLE001 - e.g. a worker that cannot start
            logger.exception(
                "symbolic grading failed; %d verdicts counted as not equal", len(pending)
            )
            verdicts = [False] * len(pending)
        for (index, _), verdict in zip(pending, verdicts, strict=True):
            results[index] = verdict
    return results


def _run_symbolic(
    pending: list[tuple[int, tuple[str, str]]], processes: int, timeout: float
) -> list[bool]:
    jobs = [job for _, job in pending]
    if processes <= 1 or len(jobs) == 1:
        return [verify_with_limit(gold, pred, timeout) for gold, pred in jobs]
    pool = SymbolicPool(min(processes, len(jobs)))
    try:
        return pool.run(jobs, timeout)
    finally:
        pool.close()
