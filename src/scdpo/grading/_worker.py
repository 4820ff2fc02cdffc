"""Child process that runs math-verify, one verdict per request line.

Started by `scdpo.grading.symbolic`; the parent enforces the time limit by killing this process,
so math-verify's own signal-based timeouts are switched off here.
Protocol: `ready` once imported, then per request a JSON line `[gold, pred]` in, `1`/`0` out.
"""

from __future__ import annotations

import json
import logging
import os
import sys


def main() -> None:
    # Keep the protocol channel private: anything sympy prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.CRITICAL)

    from scdpo.grading.symbolic import verify_in_process

    verify_in_process("1", "1")  # import and warm the parser before announcing readiness
    channel.write("ready\n")
    for line in sys.stdin:
        gold, pred = json.loads(line)
        channel.write("1\n" if verify_in_process(gold, pred) else "0\n")


if __name__ == "__main__":
    main()
