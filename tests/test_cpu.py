"""One CPU kernel path for the workflow's jobs (scdpo.cpu): which variables, when, and that the
pinned path computes the same bits whatever instruction set MKL would otherwise pick."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scdpo.cpu import (
    OPT_OUT,
    PORTABLE_KERNELS,
    SHARED_CORES,
    cpu_flags,
    job_environment,
    kernel_path,
    portable,
)

AVX2_CPU = {"sse2", "avx", "avx2", "fma"}


def test_a_portable_cpu_gets_the_pinned_path_and_sleeping_threads():
    env = job_environment({}, AVX2_CPU | {"avx512f"})
    assert env == {**PORTABLE_KERNELS, **SHARED_CORES}
    assert kernel_path(env).startswith("portable")


def test_a_users_own_setting_wins():
    env = job_environment({"MKL_CBWR": "AVX2", "OMP_WAIT_POLICY": "ACTIVE"}, AVX2_CPU)
    assert "MKL_CBWR" not in env and "OMP_WAIT_POLICY" not in env
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert kernel_path({**env, "MKL_CBWR": "AVX2"}).startswith("native")


def test_opting_out_keeps_native_kernels():
    assert job_environment({OPT_OUT: "native"}, AVX2_CPU) == SHARED_CORES


@pytest.mark.parametrize("flags", [{"sse2", "avx"}, {"avx2"}, set()])
def test_a_cpu_without_avx2_and_fma_is_not_pinned(flags):
    # torch's AVX2 kernels would stop with an illegal instruction there.
    assert job_environment({}, flags) == SHARED_CORES
    assert kernel_path({}) == "native"


def test_only_x86_64_is_pinned():
    assert portable(AVX2_CPU, "x86_64")
    assert not portable(AVX2_CPU, "aarch64")


def test_cpu_flags_reads_the_flags_line(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: none\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


# Kernels that follow MKL's instruction set unless pinned (seen on an AVX-512 machine: a batched
# matmul and exp went through other code with MKL limited to AVX2), inside a training step.
STEP = """
import hashlib, torch
torch.manual_seed(0)
torch.set_num_threads(2)
model = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.SiLU(), torch.nn.Linear(512, 700))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(64, 128), torch.randint(0, 700, (64,))
for _ in range(3):
    attention = torch.softmax(torch.bmm(torch.randn(8, 33, 64), torch.randn(8, 64, 33)), -1)
    loss = torch.nn.functional.cross_entropy(model(x), y) + torch.exp(attention / 10).sum() * 1e-3
    loss.backward()
    opt.step()
    opt.zero_grad()
digest = hashlib.sha256()
for p in model.parameters():
    digest.update(p.detach().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), digest.hexdigest())
"""


def _step_digest(extra: dict[str, str]) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}
    env.update(job_environment(env), **extra)
    out = subprocess.run(
        [sys.executable, "-c", STEP], env=env, capture_output=True, text=True, check=True
    ).stdout
    capability, digest = out.split()
    return capability, digest


def test_pinned_results_do_not_follow_mkls_instruction_set():
    """An AVX2 machine's MKL is emulated by limiting MKL to AVX2 (a no-op on an AVX2 machine)."""
    if not portable(cpu_flags()):
        pytest.skip("this CPU cannot take the pinned path")
    capability, pinned = _step_digest({})
    assert capability == "AVX2"
    assert _step_digest({"MKL_ENABLE_INSTRUCTIONS": "AVX2"})[1] == pinned
