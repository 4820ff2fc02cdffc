"""Run the workflow in a scratch directory and read what Snakemake planned."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """This project's workflow, run by this interpreter's Snakemake in `workdir`."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_command(workdir, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    result.output = result.stdout
    return result


def planned_jobs(output: str) -> Counter:
    """Jobs per rule from a dry-run's 'Job stats' table (empty when nothing is to be done)."""
    if "Nothing to be done" in output:
        return Counter()
    table = output.split("Job stats:", 1)[1]
    jobs = Counter()
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        jobs[match.group(1)] = int(match.group(2))
    total = jobs.pop("total", None)
    assert total is None or total == sum(jobs.values()), table
    jobs.pop("all", None)
    return jobs
