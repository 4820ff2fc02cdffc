import os
import shutil
from pathlib import Path

import pytest
from workflow_run import snakemake

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"
MICRO = REPO / "config" / "micro.yaml"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers with `--dist loadgroup`. The workflow runs go to
    one worker, first: the micro run is a session fixture (one per worker), the paper-shaped
    SLURM run builds on it, and one local SLURM cluster at a time keeps the two SLURM runs apart;
    that chain is the suite's longest. Every other module stays on one worker, so that its module
    fixtures run once; the other worker works through those while the chain runs. Without xdist
    the marks do nothing and only the order changes."""
    for item in items:
        group = WORKFLOW_RUNS if _in_chain(item) else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not _in_chain(item))  # stable: modules keep their order


WORKFLOW_RUNS = "workflow_runs"


def _in_chain(item) -> bool:
    names = getattr(item, "fixturenames", ())
    return "micro_run" in names or "slurm_cluster" in names


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"real benchmark files not found at {BENCHMARKS}")
    return BENCHMARKS


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    # Tests share 2 cores; one torch thread each keeps them from fighting.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


# Here, not in a test module: a session fixture imported into two modules runs once per module.
@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> Path:
    """One completed run of config/micro.yaml, shared by the content, re-run and report tests."""
    workdir = tmp_path_factory.mktemp("micro")
    shutil.copy(MICRO, workdir / "micro.yaml")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(workdir / "micro.yaml"))
    assert result.returncode == 0, result.output[-6000:]
    return workdir
