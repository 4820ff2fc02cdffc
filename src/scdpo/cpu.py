"""One CPU kernel path for the workflow's jobs: every x86-64 machine computes the same numbers.

torch, MKL and oneDNN choose their kernels by the instruction set (AVX-512 where the CPU has it,
AVX2 otherwise; MKL also by vendor and cache sizes), and those kernels add floats in different
orders. Over 1,000 SFT steps the differences grow into other models: the embedded default gave
249 / 700 DPO / data-equal pairs on an AVX-512 machine and 312 / 794 on an AVX2 one, same commit.
The workflow therefore runs its jobs with one path that every x86-64 CPU since 2013 (AVX2 + FMA)
can take: torch's AVX2 kernels, oneDNN capped at AVX2, and MKL's CNR branch `COMPATIBLE` (the one
branch MKL documents as giving the same results on Intel and on other vendors' processors).

Results then still depend on the number of torch threads (a reduction splits by thread), which the
rules fix (`threads:`), and on the library versions, which `requirements.txt` pins. A user's own
setting of any of these variables wins; `SCDPO_CPU_KERNELS=native` keeps the machine's fastest
kernels (numbers then follow the CPU). GPU work is unaffected.

`OMP_WAIT_POLICY=PASSIVE` is not about numbers: OpenMP threads that spin at each barrier while
another process holds the other core made a 2-thread SFT 2-4x slower on a busy 2-core machine;
sleeping threads change no result.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from pathlib import Path

OPT_OUT = "SCDPO_CPU_KERNELS"  # "native": no pinned kernel path
PORTABLE_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels (and Sleef's vector maths)
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",  # BLAS and vector maths: one branch, fixed blocking, any vendor
}
SHARED_CORES = {"OMP_WAIT_POLICY": "PASSIVE"}
NEEDED_FLAGS = {"avx2", "fma"}  # what torch's AVX2 kernels need (its own capability check)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where unreadable)."""
    try:
        with cpuinfo.open() as lines:
            for line in lines:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def portable(flags: set[str], machine: str | None = None) -> bool:
    """Whether this CPU can take the pinned path."""
    machine = machine or platform.machine()
    return machine in ("x86_64", "AMD64") and NEEDED_FLAGS <= flags


def job_environment(environ: Mapping[str, str], flags: set[str] | None = None) -> dict[str, str]:
    """The variables to add for the workflow's jobs: the pinned kernel path where the CPU allows
    it and the user has not opted out, and sleeping OpenMP threads. Set values are kept."""
    wanted = dict(SHARED_CORES)
    native = environ.get(OPT_OUT, "").lower() == "native"
    if not native and portable(cpu_flags() if flags is None else flags):
        wanted.update(PORTABLE_KERNELS)
    return {key: value for key, value in wanted.items() if key not in environ}


def kernel_path(environ: Mapping[str, str]) -> str:
    """A one-line description of the kernel path a job started with `environ` takes."""
    pinned = {key: environ[key] for key in PORTABLE_KERNELS if key in environ}
    settings = ", ".join(f"{key}={value}" for key, value in pinned.items())
    name = "portable" if pinned == PORTABLE_KERNELS else "native"
    return f"{name} ({settings})" if settings else name
