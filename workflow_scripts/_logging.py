"""Shared by the thin workflow scripts: send logging (and tracebacks) to the rule's log file."""

import logging
import sys


def to_log(path: str) -> None:
    handle = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = handle
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(handle)],
        force=True,
    )
