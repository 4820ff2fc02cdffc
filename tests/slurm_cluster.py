"""A throw-away single-node SLURM cluster on localhost, for tests.

``local_slurm_cluster(workdir)`` is a context manager that

1. installs the Debian packages ``slurmctld slurmd slurm-client munge`` with
   apt-get when ``sbatch`` (or a daemon) is missing, and skips the calling test
   with a clear message only when that is impossible (not root, no apt-get,
   apt fails);
2. writes its own ``slurm.conf`` / ``gres.conf`` / munge key into a fresh
   temporary directory (the system's ``/etc/slurm`` and ``/etc/munge`` are
   never read or written: clients find the cluster through ``SLURM_CONF`` and
   the munge socket named in ``AuthInfo``);
3. starts ``munged``, ``slurmctld`` and ``slurmd`` in the foreground as
   children of this process, on free TCP ports;
4. waits until ``sinfo`` shows the node idle and yields a :class:`ClusterInfo`;
5. on exit, even when the test failed: cancels the cluster's jobs, stops the
   daemons by pid, kills any left-over process whose environment names this
   cluster's ``SLURM_CONF`` (job steps, stray ``slurmstepd``), and deletes the
   temporary directory.

The node can be *virtual*: ``cpus``, ``real_memory_mb`` and ``gpus`` may exceed
the machine (``SlurmdParameters=config_overrides`` makes slurmd trust the
config, and GPUs are count-only GRES without device files). That lets a
profile written for a real GPU cluster be submitted unchanged: the scheduler
checks the requests (``--gpus``, ``--cpus-per-gpu``, ``--mem``, ``-t``), the
job itself then runs on the CPU of this machine. Nothing enforces the limits
(``TaskPlugin=task/none``), so keep concurrency small with Snakemake's
``--jobs``.

Settings that work on Debian 12 / slurm 22.05 as root without systemd or
cgroups: ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
``AccountingStorageType=accounting_storage/none`` (no slurmdbd, so ``sacct``
knows nothing: use ``squeue`` for job status), ``JobCompType=jobcomp/filetxt``
(one line per finished job: the evidence that jobs ran through SLURM).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm"
SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# executables the cluster needs, and the package that ships each
_NEEDED = {
    "sbatch": "slurm-client",
    "squeue": "slurm-client",
    "sinfo": "slurm-client",
    "scancel": "slurm-client",
    "scontrol": "slurm-client",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "munged": "munge",
}
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_TIMEOUT_S = 900
START_TIMEOUT_S = 90


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed here (the test turns this into a skip)."""


class _NodeRejected(Exception):
    """slurmctld refused the node definition (INVAL / DRAIN): no point waiting."""


@dataclass
class ClusterInfo:
    """What a test needs to talk to the local cluster."""

    state_dir: Path  # temporary; deleted on exit
    slurm_conf: Path
    env: dict[str, str]  # os.environ + SLURM_CONF: pass to every subprocess
    node: str
    partition: str
    cpus: int
    real_memory_mb: int
    gpus: int
    jobcomp_log: Path  # jobcomp/filetxt: one line per finished job
    pids: dict[str, int] = field(default_factory=dict)

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> str:
        """Run a SLURM client command against this cluster; return stdout."""
        proc = subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def finished_jobs(self) -> dict[str, dict[str, str]]:
        """Jobs recorded by jobcomp/filetxt, by job id: {JobId: {key: value}}."""
        jobs: dict[str, dict[str, str]] = {}
        if not self.jobcomp_log.exists():
            return jobs
        for line in self.jobcomp_log.read_text().splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs

    def log_tails(self, n: int = 40) -> str:
        """Last lines of the daemon logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.state_dir / name
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-n:]
                parts.append(f"--- {name} (last {len(lines)} lines) ---")
                parts.extend(lines)
        return "\n".join(parts)


# --------------------------------------------------------------------------- install


def _missing_executables() -> list[str]:
    path = os.environ.get("PATH", "") + ":" + _SBIN_PATH
    return [exe for exe in _NEEDED if shutil.which(exe, path=path) is None]


def ensure_slurm_installed() -> None:
    """apt-get install the SLURM packages if any executable is missing.

    Raises SlurmUnavailable (with the reason) when they cannot be installed.
    """
    if not _missing_executables():
        return
    # Two test workers may get here at once; apt-get allows one at a time.
    with FileLock(Path(tempfile.gettempdir()) / "scdpo-slurm-apt.lock"):
        _apt_get_install()


def _apt_get_install() -> None:
    missing = _missing_executables()
    if not missing:
        return
    packages = sorted({_NEEDED[exe] for exe in missing} | {"munge"})
    if os.geteuid() != 0:
        raise SlurmUnavailable(
            f"SLURM executables {missing} missing and not root: cannot "
            f"apt-get install {' '.join(packages)}"
        )
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"SLURM executables {missing} missing and no apt-get here")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Do not let the packages' postinst start the system daemons: the test starts
    # its own, with its own configuration.  (Only written when absent; removed after.)
    policy = Path("/usr/sbin/policy-rc.d")
    wrote_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        wrote_policy = True
    try:
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            try:
                proc = subprocess.run(
                    cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
                )
            except subprocess.TimeoutExpired:
                raise SlurmUnavailable(f"{' '.join(cmd)} timed out") from None
            if proc.returncode != 0:
                raise SlurmUnavailable(
                    f"{' '.join(cmd)} failed ({proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
                )
    finally:
        if wrote_policy:
            policy.unlink(missing_ok=True)
    still_missing = _missing_executables()
    if still_missing:
        raise SlurmUnavailable(f"still missing after apt-get install: {still_missing}")


# --------------------------------------------------------------------------- config


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def machine_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _write_config(
    d: Path,
    *,
    node: str,
    partition: str,
    cpus: int,
    real_memory_mb: int,
    gpus: int,
    virtual: bool,
    min_job_age_s: int,
) -> Path:
    ctld_port, slurmd_port = _free_ports(2)
    host = socket.gethostname().split(".")[0]
    (d / "state").mkdir()
    (d / "spool").mkdir()
    gres_node = f" Gres=gpu:{gpus}" if gpus else ""
    lines = [
        f"ClusterName=localtest{os.getpid()}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={d / 'munge.socket'}",
        f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}",
        f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}",
        f"SlurmdLogFile={d / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # no cgroups / systemd here: track job processes by parent pid, no binding
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        # no slurmdbd: sacct is empty, so status must come from squeue ...
        "AccountingStorageType=accounting_storage/none",
        # ... and finished jobs must stay visible to squeue long enough for the
        # executor's polling (the plugin falls back to sacct below 3x its interval)
        # and for a test's checks after a long run
        f"MinJobAge={min_job_age_s}",
        # one line per finished job: evidence that jobs went through slurmctld
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={d / 'jobcomp.log'}",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=5",
        "InactiveLimit=0",
        "GresTypes=gpu",
        "MailProg=/bin/true",
    ]
    if virtual:
        # trust the node definition below even where it exceeds this machine
        lines.append("SlurmdParameters=config_overrides")
    lines += [
        f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} "
        f"RealMemory={real_memory_mb}{gres_node} State=UNKNOWN",
        f"PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = d / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    # slurm reads gres.conf next to slurm.conf. slurmd drops GPUs without a
    # device File, so each fake GPU is an empty regular file (nothing binds to
    # devices with TaskPlugin=task/none).
    gres = ["AutoDetect=off"]
    if gpus:
        (d / "fakegpu").mkdir()
        for i in range(gpus):
            (d / "fakegpu" / f"gpu{i}").touch()
        files = f"{d / 'fakegpu'}/gpu[0-{gpus - 1}]" if gpus > 1 else f"{d / 'fakegpu'}/gpu0"
        gres.append(f"NodeName={node} Name=gpu File={files}")
    (d / "gres.conf").write_text("\n".join(gres) + "\n")
    return conf


_CLIENTS = ("sbatch", "srun", "salloc", "squeue", "sinfo", "scancel", "scontrol", "sacct")


def _write_client_wrappers(d: Path, conf: Path) -> Path:
    """<d>/bin/<client>: the real SLURM client with SLURM_CONF pinned to `conf`.

    Needed because snakemake-executor-plugin-slurm-jobstep (0.6) removes every
    SLURM_* variable but a few job ids, SLURM_CONF included, before its nested
    `srun` inside a job; without /etc/slurm/slurm.conf that srun then fails with
    "Could not establish a configuration source". PATH survives, so a wrapper
    first on PATH puts the variable back. (Clusters with /etc/slurm/slurm.conf
    or configless slurmd are not affected.)
    """
    bin_dir = d / "bin"
    bin_dir.mkdir()
    path = os.environ.get("PATH", "") + ":" + _SBIN_PATH
    for client in _CLIENTS:
        real = shutil.which(client, path=path)
        if real is None:
            continue
        wrapper = bin_dir / client
        wrapper.write_text(f'#!/bin/sh\nexport SLURM_CONF="{conf}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
    return bin_dir


# --------------------------------------------------------------------------- processes


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _pids_with_env(marker: bytes) -> list[int]:
    """Pids whose environment contains `marker` (this cluster's SLURM_CONF=...)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _kill_leftovers(marker: bytes) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_with_env(marker)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(1)


def _wait_until(predicate, timeout: float, what: str, info: ClusterInfo, procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}) while waiting for {what}\n"
                    + info.log_tails()
                )
        try:
            if predicate():
                return
        except _NodeRejected as e:
            raise RuntimeError(f"{e}\n" + info.log_tails()) from None
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n" + info.log_tails())


@contextlib.contextmanager
def local_slurm_cluster(
    workdir: str | os.PathLike | None = None,
    *,
    cpus: int | None = None,
    real_memory_mb: int | None = None,
    gpus: int = 0,
    node: str = "localhost",
    partition: str = "debug",
    min_job_age_s: int = 3600,
) -> Iterator[ClusterInfo]:
    """Start a one-node SLURM cluster; stop it and delete its state on exit.

    workdir: where the temporary state directory goes (default: the system temp
      dir; a short path is used anyway if workdir would make the munge socket
      path too long for a unix socket).
    cpus / real_memory_mb / gpus: the node as SLURM sees it. Defaults: `nproc`
      CPUs, 90 % of MemTotal, no GPUs. Larger values make a virtual node
      (see the module docstring).
    Raises SlurmUnavailable when SLURM is missing and cannot be installed.
    """
    ensure_slurm_installed()
    real_cpus = os.cpu_count() or 1
    real_mem = machine_memory_mb()
    cpus = cpus or real_cpus
    real_memory_mb = real_memory_mb or int(real_mem * 0.9)
    virtual = cpus > real_cpus or real_memory_mb > real_mem or gpus > 0

    base = Path(workdir) if workdir is not None else None
    if base is not None and len(str(base.resolve())) > 60:
        base = None  # keep '<dir>/munge.socket' well below the 108-byte limit
    state_dir = Path(tempfile.mkdtemp(prefix="slurm-", dir=base)).resolve()
    conf = _write_config(
        state_dir,
        node=node,
        partition=partition,
        cpus=cpus,
        real_memory_mb=real_memory_mb,
        gpus=gpus,
        virtual=virtual,
        min_job_age_s=min_job_age_s,
    )
    bin_dir = _write_client_wrappers(state_dir, conf)
    env = dict(os.environ, SLURM_CONF=str(conf))
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}:{_SBIN_PATH}"
    for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
        if var != "SLURM_CONF":
            env.pop(var)  # a test run inside a real SLURM job must not leak into ours
    marker = f"SLURM_CONF={conf}".encode()
    info = ClusterInfo(
        state_dir=state_dir,
        slurm_conf=conf,
        env=env,
        node=node,
        partition=partition,
        cpus=cpus,
        real_memory_mb=real_memory_mb,
        gpus=gpus,
        jobcomp_log=state_dir / "jobcomp.log",
    )
    procs: dict[str, subprocess.Popen] = {}
    try:
        key = state_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        daemons = {
            "munged": [
                "munged",
                "--foreground",
                "--force",
                f"--socket={state_dir / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={state_dir / 'munged.pid'}",
                f"--log-file={state_dir / 'munged.log'}",
                f"--seed-file={state_dir / 'munged.seed'}",
                "--num-threads=2",
            ],
            "slurmctld": ["slurmctld", "-D", "-i", "-f", str(conf)],
            "slurmd": ["slurmd", "-D", "-N", node, "-f", str(conf)],
        }
        for name, cmd in daemons.items():
            out = open(state_dir / f"{name}.stdout", "wb")  # noqa: SIM115
            procs[name] = subprocess.Popen(
                [shutil.which(cmd[0], path=env["PATH"]) or cmd[0], *cmd[1:]],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C is handled by the cleanup below
            )
            out.close()
            info.pids[name] = procs[name].pid
            if name == "munged":
                _wait_until(
                    (state_dir / "munge.socket").exists, 20, "the munge socket", info, procs
                )
            elif name == "slurmctld":
                _wait_until(
                    lambda: info.run("scontrol", "ping", timeout=10).find("UP") >= 0,
                    START_TIMEOUT_S,
                    "slurmctld to answer",
                    info,
                    procs,
                )

        def node_idle() -> bool:
            state = info.run("sinfo", "-h", "-n", node, "-o", "%t", timeout=10).strip()
            if state.startswith(("inval", "drain", "drng")):
                reason = info.run("sinfo", "-h", "-n", node, "-o", "%E", check=False)
                raise _NodeRejected(f"node {node} is {state}: {reason.strip()}")
            return state == "idle"

        _wait_until(node_idle, START_TIMEOUT_S, f"node {node} to be idle", info, procs)
        yield info
    finally:
        if "slurmctld" in procs and procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                info.run("scancel", "--full", f"--partition={partition}", timeout=10, check=False)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    queue = info.run(
                        "squeue", "-h", "-t", "PD,R,CG,CF,S", "-o", "%i", timeout=10, check=False
                    )
                    if not queue.strip():
                        break
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in procs:
                with contextlib.suppress(Exception):
                    _stop(procs[name])
        _kill_leftovers(marker)
        shutil.rmtree(state_dir, ignore_errors=True)


# --------------------------------------------------------------------------- profile fit


@dataclass(frozen=True)
class NodeSpec:
    cpus: int
    real_memory_mb: int
    gpus: int


# Jobs of the profile's largest size the node holds at once: more than any test's --jobs, so
# that SLURM never holds a job back and --jobs alone sets how many run side by side (as with the
# local executor), two 4-GPU trainings included.
JOBS_PER_NODE = 8


def node_for_profile(
    profile_yaml: str | os.PathLike,
    *,
    min_cpus: int = 64,
    min_mem_mb: int = 512_000,
    min_gpus: int = 4,
) -> NodeSpec:
    """A (virtual) node that holds JOBS_PER_NODE of the largest request in a Snakemake profile.

    Takes the largest gpu (or gres gpu:N), cpus (gpu x cpus_per_gpu, or cpus_per_task) and mem_mb
    over default-resources and set-resources, never below a typical 4-GPU node (so rules' own
    resources and threads fit as well), and multiplies each by JOBS_PER_NODE.
    """
    import yaml

    profile = yaml.safe_load(Path(profile_yaml).read_text()) or {}
    blocks = [profile.get("default-resources") or {}]
    blocks += list((profile.get("set-resources") or {}).values())
    cpus, mem, gpus = min_cpus, min_mem_mb, min_gpus
    for res in blocks:
        gres = str(res.get("gres") or "")
        gpu = int(res.get("gpu") or (gres.split(":")[-1] if gres.startswith("gpu:") else 0))
        gpus = max(gpus, gpu)
        cpus = max(
            cpus,
            int(res.get("cpus_per_task") or 0),
            gpu * int(res.get("cpus_per_gpu") or 0),
        )
        mem_mb = res.get("mem_mb")
        if isinstance(mem_mb, int):  # expressions (strings) cannot be sized here
            mem = max(mem, mem_mb)
    return NodeSpec(
        cpus=cpus * JOBS_PER_NODE,
        real_memory_mb=mem * JOBS_PER_NODE,
        gpus=gpus * JOBS_PER_NODE,
    )


# --------------------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[ClusterInfo]:
    """A local cluster whose node fits every request in profiles/slurm.

    Skips the test (with the reason) only when SLURM cannot be installed.
    """
    spec = node_for_profile(SLURM_PROFILE / "config.yaml")
    try:
        cluster = local_slurm_cluster(
            tmp_path_factory.mktemp("slurm"),
            cpus=spec.cpus,
            real_memory_mb=spec.real_memory_mb,
            gpus=spec.gpus,
        )
        info = cluster.__enter__()
    except SlurmUnavailable as e:
        pytest.skip(f"no local SLURM cluster: {e}")
    try:
        yield info
    finally:
        cluster.__exit__(None, None, None)
