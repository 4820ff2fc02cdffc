import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from workflow_run import snakemake

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"
MICRO = REPO / "config" / "micro.yaml"

# `make test` runs pytest-xdist (`-n auto --dist loadscope`), grouped by this file's scheduler: a
# group runs on one worker, so a module's fixtures are built once. A group is a module, except that
# the modules using the micro run (they write into its folder) form one group. The paper-shaped
# module (the longest chain: the micro run's SFT model, then the SLURM run) is queued first, the
# micro run's modules last; the other workers take the rest meanwhile.
FIRST_GROUP = "test_paper_shaped"
MICRO_GROUP = "micro_run"
MICRO_MODULES = {"test_workflow_e2e", "test_report_e2e", "test_readme", "test_reproducible"}


def _group(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).stem
    return MICRO_GROUP if module in MICRO_MODULES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    config.option.loadscopereorder = False  # the queue keeps the order set below
    return ByGroup(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if "micro_run" in item.fixturenames and module not in MICRO_MODULES:
            raise pytest.UsageError(f"{item.nodeid} uses micro_run: add {module} to MICRO_MODULES")
    rank = {FIRST_GROUP: 0, MICRO_GROUP: 2}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), 1))  # stable: collection order within


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


def _session_dir(tmp_path_factory) -> Path:
    """A folder of this session shared by every xdist worker (the micro run lives there)."""
    base = tmp_path_factory.getbasetemp()
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return base
    shared = base.parent / "shared"
    shared.mkdir(exist_ok=True)
    return shared


MICRO_SFT = "results/micro/models/sft"


def _micro(tmp_path_factory, name: str, *targets: str) -> Path:
    """config/micro.yaml run to `targets` (all by default) in this session's one micro folder:
    the first worker to ask runs it, the others wait for it (or for its failure)."""
    root = _session_dir(tmp_path_factory)
    workdir, failure = root / "micro", root / "micro.failed"
    with FileLock(root / "micro.lock"):
        if failure.exists():
            pytest.fail(f"the micro run failed on another worker:\n{failure.read_text()}")
        if not (root / f"{name}.complete").exists():
            workdir.mkdir(exist_ok=True)
            shutil.copy(MICRO, workdir / "micro.yaml")
            config = str(workdir / "micro.yaml")
            result = snakemake(workdir, *targets, "--cores", "2", "--configfile", config)
            if result.returncode != 0:
                failure.write_text(result.output[-6000:])
            assert result.returncode == 0, result.output[-6000:]
            (root / f"{name}.complete").touch()
    return workdir


# Here, not in a test module: a session fixture imported into two modules runs once per module.
@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> Path:
    """One completed run of config/micro.yaml, shared by the content, re-run and report tests."""
    return _micro(tmp_path_factory, "micro_run")


@pytest.fixture(scope="session")
def micro_sft(tmp_path_factory) -> Path:
    """The micro run as far as its SFT model (`MICRO_SFT`), the trained weights the paper-shaped
    run starts from: on its own, the paper-shaped chain need not wait for the rest of the run,
    which `micro_run` completes later in the same folder."""
    return _micro(tmp_path_factory, "micro_sft", MICRO_SFT) / MICRO_SFT
