"""A toy workflow to completion on a real (local, one-node) SLURM cluster, through
`snakemake --profile profiles/slurm` exactly as on a cluster plus a few test-only options
(tests/slurm_run.py says what is checked). The pipeline itself goes through SLURM on the
paper-shaped config in tests/test_paper_shaped.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_cluster import ClusterInfo, slurm_cluster  # noqa: F401 (fixture)
from slurm_run import (
    REPO,
    WorkflowUnderTest,
    assert_ran_through_slurm,
    copy_workflow,
    run_through_slurm,
)

TOY = WorkflowUnderTest("toy", REPO / "tests" / "slurm_toy")


@pytest.mark.slow
def test_toy_workflow_runs_through_slurm(slurm_cluster: ClusterInfo, tmp_path: Path):  # noqa: F811
    workdir = tmp_path / TOY.id
    copy_workflow(TOY, workdir)
    assert_ran_through_slurm(run_through_slurm(TOY, slurm_cluster, workdir), slurm_cluster)


def test_copy_keeps_the_package_and_skips_the_top_level_run_folders(tmp_path):
    """src/scdpo/results is a package, not a run's results: only the top-level folders go."""
    pipeline = WorkflowUnderTest("pipeline", REPO)
    skipped = pipeline.ignored(str(REPO), ["results", "logs", "src", "Snakefile"])
    assert skipped == {"results", "logs"}
    assert not pipeline.ignored(str(REPO / "src" / "scdpo"), ["results"])
