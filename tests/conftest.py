import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"


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
