"""GPU preflight (issue 25.4) on faked drivers and builds: no GPU is needed to test the logic."""

from __future__ import annotations

import ctypes
import logging

import pytest

from scdpo import gpu
from scdpo.gpu import Driver, DriverError, check, cuda_version, problems, read_driver, vllm_cuda

CUDA12_DRIVER = Driver("535.104.05", (12, 2))
CUDA13_DRIVER = Driver("580.65.06", (13, 0))
TORCH13 = {"torch 2.13.0": "13.0"}  # torch 2.13.0 from PyPI: torch.version.cuda == "13.0"


def test_cuda13_builds_on_a_cuda12_driver_fail_with_the_driver_needed_and_a_cuda12_build():
    [problem] = problems(TORCH13, CUDA12_DRIVER, required=False)
    assert "torch 2.13.0 is built for CUDA 13.0" in problem
    assert "R580 series or newer" in problem
    assert "driver 535.104.05 supports CUDA up to 12.2" in problem
    assert "torch==2.13.0+cu129" in problem and "download.pytorch.org/whl/cu129" in problem
    assert "vllm" not in problem  # no vLLM in this env: only torch's remedy
    with_vllm = {**TORCH13, "vLLM 0.32.0": "13"}
    [problem] = problems(with_vllm, CUDA12_DRIVER, required=True)
    assert "vLLM 0.32.0 is built for CUDA 13.0" in problem
    assert "vllm==0.32.0+cu129" in problem and "wheels.vllm.ai/0.32.0/cu129" in problem


def test_a_driver_of_the_builds_major_or_newer_passes():
    assert problems(TORCH13, CUDA13_DRIVER, required=True) == []
    assert problems(TORCH13, Driver("590.1", (13, 2)), required=True) == []
    # Minor version compatibility: a 12.9 build on a driver for 12.2; backward: 12.9 on CUDA 13.
    cu129 = {"torch 2.13.0+cu129": "12.9", "vLLM 0.32.0+cu129": "12.9"}
    assert problems(cu129, CUDA12_DRIVER, required=True) == []
    assert problems(cu129, CUDA13_DRIVER, required=True) == []


def test_a_driver_older_than_cuda12_has_no_build_to_install():
    [problem] = problems(TORCH13, Driver("470.82.01", (11, 4)), required=True)
    assert "Update the driver: the oldest builds" in problem and "R525" in problem
    assert "pip install" not in problem


def test_cpu_builds_and_cpu_nodes():
    # A CPU build of torch: nothing to check, whatever the node has.
    assert problems({"torch 2.13.0+cpu": None}, CUDA12_DRIVER, required=True) == []
    # A CUDA build on a node without a driver: fine for a CPU job, an error for GPU work.
    assert problems(TORCH13, Driver(None, None), required=False) == []
    [problem] = problems(TORCH13, Driver(None, None), required=True)
    assert "no NVIDIA driver loads" in problem


def test_builds_of_two_cuda_majors_in_one_env_fail():
    mixed = {"torch 2.13.0+cu129": "12.9", "vLLM 0.32.0": "13"}  # libcudart.so.13 would be missing
    found = problems(mixed, CUDA13_DRIVER, required=True)
    assert len(found) == 1 and "mixes CUDA major versions" in found[0]


def test_check_raises_one_error_naming_the_docs_or_says_what_passed():
    with pytest.raises(DriverError, match=r"GPU preflight \(training\): torch .*docs/envs.md"):
        check("training", TORCH13, CUDA12_DRIVER, required=False)
    line = check("training", TORCH13, CUDA13_DRIVER, required=True)
    assert line.endswith(": ok") and "580.65.06" in line and "CUDA 13.0" in line


def test_vllm_cuda_from_its_local_label_its_requirements_or_torch():
    assert vllm_cuda("0.32.0+cu129", [], "13.0") == "12.9"
    assert vllm_cuda("0.32.0+cu130", [], None) == "13.0"
    requires = [  # vllm 0.32.0 from PyPI (its metadata, shortened)
        "torch==2.13.0",
        "nvidia-cudnn-frontend>=1.19.1",
        "nvidia-cutlass-dsl[cu13]==4.8.0",
        'nvidia-deepstream-videodecode-cu13>=9.0.2; extra == "deepstream"',
    ]
    assert vllm_cuda("0.32.0", requires, "12.9") == "13"
    assert vllm_cuda("0.32.0", ["torch==2.13.0"], "12.9") == "12.9"
    assert cuda_version("13") == (13, 0) and cuda_version("12.6") == (12, 6)
    assert cuda_version(None) is None


class _FakeLibcuda:
    def __init__(self, version: int, result: int = 0) -> None:
        self.version, self.result = version, result

    def cuDriverGetVersion(self, pointer) -> int:  # noqa: N802 - the C name
        pointer._obj.value = self.version
        return self.result


def _load(version: int | None, result: int = 0):
    def load(name: str):
        assert name == "libcuda.so.1"
        if version is None:
            raise OSError("libcuda.so.1: cannot open shared object file")
        return _FakeLibcuda(version, result)

    return load


SMI = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_read_driver_from_libcuda_and_the_kernel_module(tmp_path):
    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Tue Jul 29 20:22:25 UTC 2025\nGCC version:  gcc 12.2.0\n"
    )
    no_smi = lambda: pytest.fail("nvidia-smi asked although libcuda and /proc answered")  # noqa: E731
    assert read_driver(_load(13000), proc, no_smi) == CUDA13_DRIVER
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 2023\n")
    assert read_driver(_load(12020), proc, no_smi) == CUDA12_DRIVER


def test_read_driver_falls_back_to_nvidia_smi_and_reports_no_driver(tmp_path):
    missing = tmp_path / "absent"
    assert read_driver(_load(None), missing, lambda: SMI) == CUDA12_DRIVER
    assert read_driver(_load(12020, result=3), missing, lambda: SMI) == CUDA12_DRIVER
    assert read_driver(_load(None), missing, lambda: "") == Driver(None, None)


def test_the_real_libcuda_lookup_never_raises():
    # Through ctypes for real: None on a machine without the driver (as here), else a version.
    found = gpu._libcuda_version(ctypes.CDLL)
    assert found is None or (found[0] >= 11 and found[1] >= 0)


def test_gpus_requested_by_the_job():
    assert gpu.gpus_requested({"CUDA_VISIBLE_DEVICES": "0,1"})
    assert gpu.gpus_requested({"SLURM_JOB_GPUS": "2"})
    assert not gpu.gpus_requested({"CUDA_VISIBLE_DEVICES": ""})
    assert not gpu.gpus_requested({"CUDA_VISIBLE_DEVICES": "-1"})
    assert not gpu.gpus_requested({})


@pytest.fixture
def old_driver(monkeypatch):
    """This node: a CUDA 12.2 driver under a CUDA 13 torch and vLLM (faked)."""
    monkeypatch.setattr(gpu, "read_driver", lambda: CUDA12_DRIVER)
    vllm13 = {"vLLM 0.32.0": "13"}
    monkeypatch.setattr(
        gpu, "installed_builds", lambda vllm=False: TORCH13 | (vllm13 if vllm else {})
    )


def test_preflight_required_for_vllm_and_for_jobs_given_gpus(monkeypatch, caplog):
    monkeypatch.setattr(gpu, "read_driver", lambda: Driver(None, None))
    monkeypatch.setattr(gpu, "installed_builds", lambda vllm=False: TORCH13)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.INFO, logger="scdpo.gpu"):
        gpu.preflight("training")  # a CPU job on a node without a driver
    assert "no NVIDIA driver, no GPU work" in caplog.text
    with pytest.raises(DriverError, match="needs a GPU"):
        gpu.preflight("vLLM generation", vllm=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(DriverError, match="needs a GPU"):
        gpu.preflight("training")


def test_preflight_of_cpu_builds_on_a_cpu_job_asks_no_driver(monkeypatch):
    monkeypatch.setattr(gpu, "read_driver", lambda: pytest.fail("driver read for a CPU job"))
    monkeypatch.setattr(gpu, "installed_builds", lambda vllm=False: {"torch 2.13.0+cpu": None})
    gpu.preflight("training", required=False)


def test_the_vllm_engine_checks_before_it_imports_vllm(old_driver):
    from scdpo.generation.vllm_engine import VLLMBackend

    # vLLM is not installed here: reaching its import would be an ImportError instead.
    with pytest.raises(DriverError, match=r"vLLM generation.*R580"):
        VLLMBackend("/nonexistent-model")


def test_the_training_cli_checks_before_it_launches(old_driver, monkeypatch, tmp_path):
    from scdpo.train import cli

    monkeypatch.setattr(cli, "relaunch", lambda *a: pytest.fail("launched past the preflight"))
    args = ["sft", "--model", "m", "--data", "d", "--out", str(tmp_path / "o"), "--recipe", "{}"]
    with pytest.raises(DriverError, match=r"GPU preflight \(training\)"):
        cli.main([*args, "--checkpoint-dir", str(tmp_path / "c")])


def test_the_command_line_exits_1_with_the_message(old_driver, capsys):
    assert gpu.main(["--vllm"]) == 1
    assert "vllm==0.32.0+cu129" in capsys.readouterr().err
