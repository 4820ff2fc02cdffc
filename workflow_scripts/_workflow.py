"""Shared by the thin workflow scripts: import the package from this checkout, log to its log.

The package lives in src/ beside this folder, so a job finds it in any environment (the project's
.venv, a rule's conda env, a SLURM node) without installing it.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def to_log(path: str) -> None:
    """Send logging, warnings and tracebacks of this job to its `log:` file."""
    handle = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = handle
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(handle)],
        force=True,
    )
    logging.captureWarnings(True)


def resume_file(output: str, exp: str) -> str:
    """Where a generation job appends its finished chunks: its output's path under
    results/<exp>/.resume/ (a location, so no param: it changes no result)."""
    experiment = Path("results", exp)
    return str(experiment / ".resume" / Path(output).relative_to(experiment))
