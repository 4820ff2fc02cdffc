"""Run a workflow through `snakemake --profile profiles/slurm` on the local SLURM cluster
(tests/slurm_cluster.py) and check that every non-local job really went through sbatch/slurmctld:

- each job Snakemake submitted (its "submitted with SLURM jobid N" line) ended
  COMPLETED in slurmctld's job-completion log (jobcomp/filetxt), in the
  workflow's directory, after at most the profile's restart-times FAILED
  attempts (each one reported as a warning, with its SLURM log);
- every job Snakemake finished was submitted, or belongs to a local rule;
- slurmctld knows each job by the run's job name and its rule (squeue -t all):
  per rule, as many SLURM jobs as Snakemake submitted;
- rules given GPUs in the profile's set-resources asked SLURM for that many;
- each job's batch script runs this interpreter's `-m snakemake` (the venv),
  and each job left its SLURM log file (profile: slurm-logdir);
- a dry-run afterwards has nothing left to do.

Used by tests/test_slurm.py (a toy workflow) and tests/test_paper_shaped.py (the pipeline on the
paper-shaped config: every compute stage of it as a SLURM job).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

try:  # tests/ on sys.path (pytest's default rootdir-relative import)
    from slurm_cluster import SLURM_PROFILE, ClusterInfo
except ImportError:  # tests/ is a package
    from tests.slurm_cluster import SLURM_PROFILE, ClusterInfo

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WorkflowUnderTest:
    id: str
    source: Path  # copied to a temporary directory, which becomes --directory
    snakefile: str = "Snakefile"  # relative to source
    extra_args: tuple[str, ...] = ()
    # Skipped at any depth.
    ignore: tuple[str, ...] = (
        ".git",
        ".venv",
        ".snakemake",
        "__pycache__",
        "*.egg-info",
        ".pytest_cache",
        ".ruff_cache",
    )
    # Skipped at the top only: src/scdpo/results is a package, not a run's results.
    ignore_top: tuple[str, ...] = ("results", "logs", "resources", "perf")
    timeout_s: int = 300
    # SLURM jobs at once. The plugin polls every 2 s after a job finished and 10 s longer each
    # time none did, so a 10 s job holds its slot for about 36 s: more slots than the machine's
    # 2 cores keep them busy.
    jobs: int = 2

    def ignored(self, directory: str, names: list[str]) -> set[str]:
        """shutil.copytree's ignore: the run-time folders of the source, never the package."""
        skipped = set(shutil.ignore_patterns(*self.ignore)(directory, names))
        if Path(directory) == self.source:
            skipped |= set(self.ignore_top) & set(names)
        return skipped


# Test-only options on top of the profile (the command line wins over it per key).
SLURM_TEST_ARGS = (
    # first status query after 2 s instead of 40 s (jobs here take seconds)
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",  # the per-job logs are evidence (also in the profile)
)

SUBMITTED = re.compile(
    r"Job (?P<job>\d+) has been submitted with SLURM jobid (?P<slurm>\d+) \(log: (?P<log>[^)]+)\)"
)


def slurm_profile() -> dict:
    """profiles/slurm/config.yaml, parsed."""
    return yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())


def one_thread_each() -> list[str]:
    """The GPU rules' 8 threads (profile: a GPU node's CPUs) would thrash the test machine's 2
    cores: one each instead (replaces the profile's set-threads)."""
    profile = slurm_profile()
    return ["--set-threads", *(f"{rule}=1" for rule in profile.get("set-threads") or {})]


def snakemake_env(cluster: ClusterInfo) -> dict[str, str]:
    """The cluster's env, with this interpreter's bin dir (the venv) first on PATH.

    sbatch exports the environment (--export=ALL), so the jobs' `python -m
    snakemake` finds the same snakemake and plugins as the submitting one.
    """
    env = dict(cluster.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


# `python -m snakemake` with the plugin's status-poll back-off removed (that module's docstring).
STEADY_POLL = Path(__file__).with_name("snakemake_steady_poll.py")


def run_snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: int):
    cmd = [sys.executable, str(STEADY_POLL), *args]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        # a job status that never arrives (e.g. sacct without slurmdbd) looks like this
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(
            errors="replace"
        )
        pytest.fail(f"snakemake did not finish within {timeout} s\n{out[-6000:]}")
    return proc, time.monotonic() - start


def finished_jobs(output: str) -> dict[str, str]:
    """Snakemake job id -> rule, for every job Snakemake reports as finished."""
    return dict(re.findall(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", output, flags=re.M))


def submitted_rules(output: str) -> set[str]:
    """Rules of the jobs Snakemake submitted to SLURM."""
    done = finished_jobs(output)
    return {done[m["job"]] for m in SUBMITTED.finditer(output) if m["job"] in done}


def local_rules(output: str) -> set[str]:
    """Rules whose jobs Snakemake announced as local ('localrule x:')."""
    return set(re.findall(r"^local(?:rule|checkpoint) (\w+):", output, flags=re.M))


def profile_gpus() -> dict[str, str]:
    """Rule -> the GPU request SLURM must show: `gpu: N` per job, `gres: gpu:N` per node."""
    profile = slurm_profile()
    requests = {}
    for rule, res in (profile.get("set-resources") or {}).items():
        if res.get("gpu"):
            requests[rule] = f"gpu:{res['gpu']}"
        elif str(res.get("gres", "")).startswith("gpu:"):
            requests[rule] = res["gres"]
    return requests


def diagnostics(cluster: ClusterInfo, workdir: Path, output: str) -> str:
    parts = ["--- snakemake output (tail) ---", output[-6000:], cluster.log_tails(25)]
    for log in sorted((workdir / "logs" / "slurm").rglob("*.log"))[:10]:
        parts += [f"--- {log} ---", log.read_text(errors="replace")[-2000:]]
    return "\n".join(parts)


@dataclass
class SlurmRun:
    """A finished `snakemake --profile profiles/slurm` run and what is needed to check it."""

    workdir: Path
    args: list[str]
    env: dict[str, str]
    output: str
    seconds: float
    returncode: int


def copy_workflow(wf: WorkflowUnderTest, workdir: Path) -> None:
    shutil.copytree(wf.source, workdir, ignore=wf.ignored)


def job_env_sbatch(directory: Path, job_env: dict[str, str | None], cluster: ClusterInfo) -> Path:
    """A folder whose `sbatch` sets `job_env` (a value of None: unset) and then runs the cluster's
    sbatch: first on Snakemake's PATH, it gives every compute job an environment that Snakemake
    and its local rules, on the 'login node', do not have (e.g. no route to the hub). sbatch
    exports its own environment to the job (--export=ALL)."""
    real = shutil.which("sbatch", path=cluster.env["PATH"])
    assert real, "no sbatch on the cluster's PATH"
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", "# The compute jobs' environment (tests/slurm_run.py: job_env_sbatch)."]
    for key, value in job_env.items():
        lines.append(f"unset {key}" if value is None else f"export {key}={shlex.quote(value)}")
    wrapper = directory / "sbatch"
    wrapper.write_text("\n".join([*lines, f'exec "{real}" "$@"', ""]))
    wrapper.chmod(0o755)
    return directory


def run_through_slurm(
    wf: WorkflowUnderTest,
    cluster: ClusterInfo,
    workdir: Path,
    extra_env: dict | None = None,
    job_env: dict[str, str | None] | None = None,
) -> SlurmRun:
    """Snakemake with the SLURM profile in `workdir` (a copy of the workflow, see copy_workflow);
    `extra_env` reaches the jobs too (sbatch exports the environment), `job_env` only the jobs
    (set, or unset where None; job_env_sbatch)."""
    env = snakemake_env(cluster) | (extra_env or {})
    if job_env:
        wrappers = job_env_sbatch(workdir.parent / "job-env-bin", job_env, cluster)
        env["PATH"] = f"{wrappers}{os.pathsep}{env['PATH']}"
    args = [
        "--profile",
        str(SLURM_PROFILE),
        "--snakefile",
        str(workdir / wf.snakefile),
        "--directory",
        str(workdir),
        "--jobs",
        str(wf.jobs),
        *one_thread_each(),
        *SLURM_TEST_ARGS,
        *wf.extra_args,
    ]
    proc, seconds = run_snakemake(args, workdir, env, wf.timeout_s)
    print(f"snakemake via SLURM: {seconds:.1f} s")
    return SlurmRun(workdir, args, env, proc.stdout + proc.stderr, seconds, proc.returncode)


def failed_attempts(submitted: dict[str, re.Match], finished: dict[str, dict]) -> set[str]:
    """SLURM ids of the attempts that failed before a resubmission of the same Snakemake job
    COMPLETED; fails the test if a job never completed or was retried beyond restart-times."""
    profile = slurm_profile()
    attempts: dict[str, list[str]] = {}
    for slurm_id in sorted(submitted, key=int):
        attempts.setdefault(submitted[slurm_id]["job"], []).append(slurm_id)
    failed = set()
    for job, ids in attempts.items():
        states = [finished[i]["JobState"] for i in ids]
        assert states[-1] == "COMPLETED", f"Snakemake job {job}: SLURM states {states}"
        assert set(states[:-1]) <= {"FAILED"}, f"Snakemake job {job}: SLURM states {states}"
        assert len(ids) <= 1 + int(profile.get("restart-times", 0)), (job, ids)
        failed |= set(ids[:-1])
    return failed


def assert_ran_through_slurm(run: SlurmRun, cluster: ClusterInfo) -> None:
    """Every job went through sbatch and slurmctld, and the run is complete (module docstring)."""
    workdir, args, env, output = run.workdir, run.args, run.env, run.output
    assert run.returncode == 0, "snakemake failed\n" + diagnostics(cluster, workdir, output)
    why = diagnostics(cluster, workdir, output)

    # 1. what Snakemake says it ran: every job either went to sbatch or is a local rule
    submitted = {m["slurm"]: m for m in SUBMITTED.finditer(output)}
    done = finished_jobs(output)
    assert submitted and done, "no jobs submitted or finished\n" + why
    remote = {m["job"]: done.get(m["job"]) for m in submitted.values()}
    assert None not in remote.values(), f"submitted but not finished: {remote}\n" + why
    # SLURM jobs per rule, a job resubmitted by the profile's restart-times counted each time
    expected_per_rule = Counter(remote[m["job"]] for m in submitted.values())
    not_submitted = {done[j] for j in done.keys() - remote.keys()}
    assert not_submitted <= local_rules(output), (
        f"jobs of rules {not_submitted - local_rules(output)} finished without sbatch\n" + why
    )
    assert not not_submitted & expected_per_rule.keys(), not_submitted

    # 2. slurmctld ran them, in the workflow's directory: each Snakemake job's last SLURM job
    #    COMPLETED in the jobcomp log, after at most restart-times FAILED ones (each reported)
    finished = cluster.finished_jobs()
    for slurm_id in submitted:
        record = finished.get(slurm_id)
        assert record is not None, f"SLURM job {slurm_id} not in the jobcomp log\n" + why
        assert Path(record["WorkDir"]).resolve() == workdir.resolve(), record
    retried = failed_attempts(submitted, finished)
    for slurm_id in retried:
        m = submitted[slurm_id]
        warnings.warn(
            f"SLURM job {slurm_id} ({remote[m['job']]}) FAILED and was resubmitted by"
            f" restart-times; its SLURM log: {m['log']}",
            stacklevel=2,
        )

    # 3. slurmctld knows each job by rule; per rule as many as Snakemake planned;
    #    GPU rules asked for the profile's GPUs
    queue = cluster.run(
        "squeue",
        "-h",
        "-t",
        "all",
        "-j",
        ",".join(submitted),
        "-O",
        "JobID:20|,Name:80|,State:20|,Comment:200|,tres-per-job:40|,tres-per-node:40|",
    )
    per_rule: Counter[str] = Counter()
    gpus = profile_gpus()
    names = set()
    for row in queue.splitlines():
        job_id, name, state, comment, per_job, per_node = (f.strip() for f in row.split("|")[:6])
        names.add(name)
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", comment)
        assert rule, f"job {job_id}: unexpected comment {comment!r}"
        per_rule[rule[1]] += 1
        assert state == ("FAILED" if job_id in retried else "COMPLETED"), (job_id, rule[1], state)
        if rule[1] in gpus:
            tres = f"{per_job} {per_node}"
            assert gpus[rule[1]] in tres, f"job {job_id} ({rule[1]}): {tres!r}"
    assert per_rule == expected_per_rule, f"squeue:\n{queue}\n" + why
    assert len(names) == 1, f"one Snakemake run, one SLURM job name: {names}"

    # 4. each job ran this interpreter's snakemake (the batch script sbatch got)
    #    and left its SLURM log (stdout of that `python -m snakemake`)
    for slurm_id, m in submitted.items():
        script = cluster.run("scontrol", "write", "batch_script", slurm_id, "-")
        assert f"{sys.executable} -m snakemake" in script, script
        assert "--executor slurm-jobstep" in script, script
        log = Path(m["log"])
        assert log.is_file(), f"no SLURM log for job {slurm_id}: {log}\n" + why
        assert log.is_relative_to(workdir / "logs" / "slurm"), log

    # 5. complete: a dry-run plans nothing
    dry, _ = run_snakemake([*args, "--dry-run"], workdir, env, 120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout + dry.stderr
