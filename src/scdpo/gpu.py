"""GPU preflight: the NVIDIA driver against the CUDA builds of torch and vLLM, before GPU work.

A CUDA build runs on a driver of its CUDA major version or newer (CUDA minor version
compatibility): CUDA 13.x needs a driver of the R580 series or newer, 12.x R525, 11.x R450
(NVIDIA, "CUDA Compatibility", minimum driver versions). torch 2.13.0 from PyPI and vLLM 0.32.0
from PyPI (the envs' pins) are CUDA 13.0 builds; on an older driver torch reports no GPU
(`torch.cuda.is_available()` is False, so a training would quietly run on the CPU) and vLLM fails
deep in its start. This check fails at once instead, saying which driver is needed and how to
install the same releases' CUDA 12.9 builds, which run on R525 and newer (docs/envs.md, "GPU
driver"). `python -m scdpo.gpu [--vllm]` runs it by hand (perf/gpu_check.sh does).

The logic is pure: the driver and the builds come in as arguments (`read_driver` and
`installed_builds` find the real ones), so the tests fake them. Standard library only.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# CUDA major version -> the oldest driver series that runs its builds (minor version compatibility).
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
# Builds of the pinned releases for CUDA 12 drivers: PyTorch's and vLLM's CUDA 12.9 wheel indexes.
CUDA12_TORCH = "torch==2.13.0+cu129 --extra-index-url https://download.pytorch.org/whl/cu129"
CUDA12_VLLM = "vllm==0.32.0+cu129 --extra-index-url https://wheels.vllm.ai/0.32.0/cu129"
DOCS = "docs/envs.md, 'GPU driver'"
# Set when a job was given GPUs (SLURM's gres, or the user): then no driver is an error.
_GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")


class DriverError(RuntimeError):
    """The node's NVIDIA driver cannot run the env's CUDA builds."""


@dataclass(frozen=True)
class Driver:
    version: str | None  # "535.104.05"; None where unknown
    cuda: tuple[int, int] | None  # the newest CUDA it supports, (12, 2); None: no driver loads


def cuda_version(text: str | None) -> tuple[int, int] | None:
    """'12.6' -> (12, 6); '13' -> (13, 0); None or '' -> None."""
    if not text:
        return None
    parts = [int(p) for p in re.findall(r"\d+", text)[:2]]
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else None


def _fmt(cuda: tuple[int, int]) -> str:
    return f"{cuda[0]}.{cuda[1]}"


def _series(version: str | None) -> int | None:
    match = re.match(r"\d+", version or "")
    return int(match.group()) if match else None


def vllm_cuda(version: str, requires: list[str], torch_cuda: str | None) -> str | None:
    """The CUDA a vLLM distribution was built for: its local label ('0.32.0+cu129' -> '12.9'),
    else the CUDA of the NVIDIA packages it requires ('nvidia-cutlass-dsl[cu13]' -> '13'), else
    torch's (vLLM's wheels are built against the torch they pin)."""
    label = re.search(r"\+cu(\d+)(\d)$", version)
    if label:
        return f"{label.group(1)}.{label.group(2)}"
    runtime = [r for r in requires if "extra ==" not in r]  # optional extras do not count
    majors = {m for r in runtime for m in re.findall(r"(?:\[|-)cu(1\d)\b", r)}
    if len(majors) == 1:
        return majors.pop()
    return torch_cuda


def problems(builds: Mapping[str, str | None], driver: Driver, required: bool) -> list[str]:
    """What is wrong, one sentence each; [] when the driver runs every CUDA build.

    builds: name -> the CUDA it was built for (None: a CPU build, nothing to check). required:
    GPU work is certain (vLLM, or a job given GPUs), so a missing driver is an error too.
    """
    cuda_builds = {name: cuda_version(cuda) for name, cuda in builds.items() if cuda}
    if not cuda_builds:
        return []
    found = []
    majors = {cuda[0] for cuda in cuda_builds.values()}
    if len(majors) > 1:
        listed = ", ".join(f"{name} for CUDA {_fmt(c)}" for name, c in cuda_builds.items())
        found.append(
            f"the env mixes CUDA major versions ({listed}): install builds of one CUDA major "
            f"(for CUDA 12: pip install {CUDA12_TORCH} and {CUDA12_VLLM})"
        )
    if driver.cuda is None:
        if required:
            found.append(
                "no NVIDIA driver loads on this node (libcuda.so.1 and nvidia-smi not found), "
                "but this job needs a GPU: is it on a GPU node, with the GPUs it asked for?"
            )
        return found
    too_new = {n: c for n, c in cuda_builds.items() if c[0] > driver.cuda[0]}
    if too_new:
        # Same major as the driver's or older runs (minor version, backward compatibility).
        need = {n: MIN_DRIVER.get(c[0]) for n, c in too_new.items()}
        listed = ", ".join(
            f"{n} is built for CUDA {_fmt(c)} (needs an NVIDIA driver "
            + (f"of the R{need[n]} series or newer)" if need[n] else f"for CUDA {c[0]})")
            for n, c in too_new.items()
        )
        remedy = f"pip install {CUDA12_TORCH}"
        if any(name.lower().startswith("vllm") for name in builds):
            remedy += f"; pip install {CUDA12_VLLM}"
        if driver.cuda[0] >= 12:
            remedy = (
                "Update the driver, or install the CUDA 12.9 builds of the same releases in the "
                f"env (they run on R{MIN_DRIVER[12]} and newer): {remedy}"
            )
        else:
            remedy = (
                f"Update the driver: the oldest builds of these releases are for CUDA 12 (R"
                f"{MIN_DRIVER[12]} or newer)"
            )
        found.append(
            f"{listed}; this node's driver {driver.version or '(version unknown)'} supports CUDA "
            f"up to {_fmt(driver.cuda)}. {remedy}"
        )
    return found


def check(purpose: str, builds: Mapping[str, str | None], driver: Driver, required: bool) -> str:
    """A line saying what was checked; DriverError with every problem and the docs otherwise."""
    found = problems(builds, driver, required)
    if found:
        raise DriverError(f"GPU preflight ({purpose}): " + " ".join(found) + f" ({DOCS})")
    listed = ", ".join(f"{name} CUDA {cuda or 'none (CPU build)'}" for name, cuda in builds.items())
    if driver.cuda is None:
        return f"GPU preflight ({purpose}): no NVIDIA driver, no GPU work; {listed}"
    return (
        f"GPU preflight ({purpose}): driver {driver.version or '?'} (CUDA up to "
        f"{_fmt(driver.cuda)}); {listed}: ok"
    )


# --- the real facts -------------------------------------------------------------------------------


def _libcuda_version(load: Callable[[str], object] = ctypes.CDLL) -> tuple[int, int] | None:
    """cuDriverGetVersion through ctypes (12020 -> (12, 2)); None where libcuda does not load."""
    try:
        lib = load("libcuda.so.1")
        value = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(value)) != 0 or value.value <= 0:
            return None
    except (OSError, AttributeError):
        return None
    return value.value // 1000, (value.value % 1000) // 10


def _run_nvidia_smi() -> str:
    try:
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def read_driver(
    load: Callable[[str], object] = ctypes.CDLL,
    proc_version: Path = Path("/proc/driver/nvidia/version"),
    nvidia_smi: Callable[[], str] = _run_nvidia_smi,
) -> Driver:
    """The driver's version (kernel module, else nvidia-smi) and the newest CUDA it supports
    (libcuda, else nvidia-smi's `CUDA Version`)."""
    version = None
    try:
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", proc_version.read_text())
        version = match.group(1) if match else None
    except OSError:
        pass
    cuda = _libcuda_version(load)
    if version is None or cuda is None:
        smi = nvidia_smi()
        if version is None and (match := re.search(r"Driver Version:\s*([\d.]+)", smi)):
            version = match.group(1)
        if cuda is None and (match := re.search(r"CUDA Version:\s*([\d.]+)", smi)):
            cuda = cuda_version(match.group(1))
    return Driver(version, cuda)


def installed_builds(vllm: bool = False) -> dict[str, str | None]:
    """torch's CUDA build (torch.version.cuda) and, with `vllm`, vLLM's (without importing it)."""
    import torch

    builds = {f"torch {torch.__version__}": torch.version.cuda}
    if vllm:
        try:
            dist = metadata.distribution("vllm")
        except metadata.PackageNotFoundError:
            return builds  # the engine's import says so
        requires = dist.requires or []
        builds[f"vLLM {dist.version}"] = vllm_cuda(dist.version, requires, torch.version.cuda)
    return builds


def gpus_requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the job was given GPUs (CUDA_VISIBLE_DEVICES, SLURM's GPU variables)."""
    return any(env.get(name, "").strip() not in ("", "-1", "NoDevFiles") for name in _GPU_VARIABLES)


def preflight(purpose: str, vllm: bool = False, required: bool | None = None) -> None:
    """Check this node's driver against the env's builds before GPU work; logs one line, or
    raises DriverError. required: default True for vLLM, else whether GPUs were requested."""
    if required is None:
        required = vllm or gpus_requested()
    builds = installed_builds(vllm)
    if not any(builds.values()) and not required:
        return  # CPU builds on a CPU job: no driver to ask
    log.info("%s", check(purpose, builds, read_driver(), required))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        builds, driver = installed_builds(vllm="--vllm" in args), read_driver()
        print(check("python -m scdpo.gpu", builds, driver, required=True))
    except DriverError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
