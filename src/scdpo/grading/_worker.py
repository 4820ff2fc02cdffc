"""Child process that runs whole verdicts (`compare.decide` with math-verify), one per line.

Started by `scdpo.grading.symbolic`; the parent enforces the time limit by killing this process,
so math-verify's own signal-based timeouts are switched off here.
Protocol: `ready` once imported, then per request a JSON line `[answer, reference]` in (the
extracted answer), `1`/`0` out.
"""

from __future__ import annotations

import json
import logging
import os
import sys

# One of each kind of comparison: a first use of each path costs 0.1-0.6 s, not a verdict's.
_WARM_UP = [
    ("1", "1"),
    ("1+x", "x+1"),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("x^2-1", "(x-1)(x+1)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("[2,\\infty)", "x\\ge2"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\sin^2x+\\cos^2x", "1"),
]


def main() -> None:
    # Keep the protocol channel private: anything sympy prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.CRITICAL)

    from scdpo.grading.compare import decide
    from scdpo.grading.symbolic import verify_in_process

    for gold, pred in _WARM_UP:  # sympy's lazily imported paths, before announcing readiness
        verify_in_process(gold, pred)
    channel.write("ready\n")
    for line in sys.stdin:
        answer, reference = json.loads(line)
        try:
            equal = decide(answer, reference, verify_in_process)
        except Exception:  # noqa: BLE001 - a verdict must never kill the worker
            equal = False
        channel.write("1\n" if equal else "0\n")


if __name__ == "__main__":
    main()
