"""math-verify for the verdicts the fast path cannot decide, without its own time limits.

math-verify's timeouts use SIGALRM, which only works in the main thread: here they are off, and
`scdpo.grading._pool` runs these verdicts in child processes that are killed on overrun.
"""

from __future__ import annotations

import logging
from functools import lru_cache

logger = logging.getLogger("scdpo.grading")


class _NoTimeoutWarning(logging.Filter):
    """math-verify warns on every call that its timeout is off; here that is deliberate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader", "math_verify.utils"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())


def wrap(answer: str) -> str:
    """math-verify only parses a gold answer reliably when it is wrapped as LaTeX math."""
    return "$" + answer.replace("%", "\\%") + "$"


@lru_cache(maxsize=4096)
def _parse(answer: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    return parse(wrap(answer), extraction_config=config, parsing_timeout=None)


def verify_in_process(gold: str, pred: str) -> bool:
    """math-verify on two normalised answers, without any time limit (callers provide one).

    A relation and a set compare both ways (`x \\ge 2` is `[2, \\infty)`); math-verify's
    default allows it only for a set predicted against a relation.
    """
    from math_verify import verify

    try:
        gold_parsed, pred_parsed = _parse(gold), _parse(pred)
        return bool(
            verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=True)
        )
    except Exception:  # noqa: BLE001 - a verdict must never raise
        logger.debug("math-verify raised on %r vs %r", gold, pred, exc_info=True)
        return False
