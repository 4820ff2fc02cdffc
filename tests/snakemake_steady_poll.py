"""Snakemake's command line, with the SLURM executor polling at a steady pace (tests only).

After every status query that finds no finished job the plugin waits 10 s longer (up to 180 s),
which suits hour-long cluster jobs. The test cluster's jobs take seconds, and a minute of back-off
after each training would leave the cores idle, so here every query is followed by the first
interval (--slurm-init-seconds-before-status-checks). Nothing else changes: jobs still go through
sbatch, and their states still come from sacct/squeue.

    python tests/snakemake_steady_poll.py --profile profiles/slurm ...   # as `python -m snakemake`
"""

import sys

import snakemake_executor_plugin_slurm as slurm
from snakemake.cli import main

_check_active_jobs = slurm.Executor.check_active_jobs


async def _check_at_a_steady_pace(self, active_jobs):
    async for job in _check_active_jobs(self, active_jobs):
        yield job
    self.next_seconds_between_status_checks = (
        self.workflow.executor_settings.init_seconds_before_status_checks
    )


slurm.Executor.check_active_jobs = _check_at_a_steady_pace

if __name__ == "__main__":
    sys.exit(main())
