import os
import shutil
from pathlib import Path

import pytest
from workflow_run import snakemake

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"
MICRO = REPO / "config" / "micro.yaml"


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
