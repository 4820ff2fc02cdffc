"""The cost plan: GPU jobs, engine loads and GPU-hours per rule of a dry-run, before submitting.

    python -m scdpo.results.plan --configfile config/paper.yaml [--profile profiles/slurm]
        [--rates-from RUN_DIR] [more snakemake options]

runs `python -m snakemake -n` here with those options, reads each planned job's rule, wildcards
and resources from its output (`parse_dry_run`) and prints one row per GPU rule (`plan_rows`,
`format_plan`): jobs, GPUs per job, engine loads, hours per job and GPU-hours, then a total and,
last, the headline. Hours per job are measured where RUN_DIR holds the rule's benchmark files
(`logs/benchmarks/<rule>/...tsv` of an earlier run: the mean wall time of that experiment's jobs,
else of all the rule's jobs), otherwise the job's `runtime` resource: the limit of one attempt,
an upper bound unless a job runs out of time and is retried.

Standard library at import: `rules/params.smk` imports GENERATION_RULES from here at parse time
(reading benchmark files imports pandas, in `measured_hours` only).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The rules each of whose jobs starts one generation engine (vLLM: minutes to load a 7B model):
# the plan's engine loads are their jobs, and each asks for its experiment's tensor-parallel GPUs
# (rules/common.smk: experiment_gpus). Kept here, not in scdpo.names: every script imports that
# module, so a new name there would change every rule's code param and re-run finished runs.
GENERATION_RULES = (
    "solutions_sample",
    "negatives_step_controlled",
    "eval_predict",
    "pilot_predict",
)

_JOB = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_FIELD = re.compile(r"^    (\w+): (.*)$")


@dataclass(frozen=True)
class PlannedJob:
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return job_gpus(self.resources)

    @property
    def runtime_h(self) -> float:
        """The job's time limit in hours (Snakemake's runtime resource is in minutes)."""
        try:
            return float(self.resources["runtime"]) / 60
        except (KeyError, ValueError):
            return math.nan


def _pairs(text: str) -> dict[str, str]:
    """'exp=micro, shard=0' -> {'exp': 'micro', 'shard': '0'}."""
    pairs = {}
    for item in text.split(", "):
        key, sep, value = item.partition("=")
        if sep:
            pairs[key.strip()] = value.strip()
    return pairs


def parse_dry_run(output: str) -> list[PlannedJob]:
    """Every job block of a dry-run's output ('rule x:' or 'localrule x:', then indented fields),
    with its wildcards and resources; empty when nothing is to be done."""
    jobs = []
    rule = None
    fields: dict[str, str] = {}

    def close() -> None:
        if rule is not None:
            jobs.append(
                PlannedJob(
                    rule,
                    _pairs(fields.get("wildcards", "")),
                    _pairs(fields.get("resources", "")),
                )
            )

    for line in output.splitlines():
        header = _JOB.match(line)
        value = _FIELD.match(line)
        if header:
            close()
            rule, fields = header[1], {}
        elif rule is not None and value:
            fields[value[1]] = value[2]
        elif rule is not None and not line.startswith(" "):
            close()
            rule = None
    close()
    return jobs


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from the dry-run's 'Job stats' table (without its total)."""
    if "Job stats:" not in output:
        return {}
    counts = {}
    for line in output.split("Job stats:", 1)[1].splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    counts.pop("total", None)
    return counts


def job_gpus(resources: Mapping[str, str]) -> int:
    """GPUs of one job: its `gpu` resource (sbatch --gpus, the job's total) or its `gres`
    'gpu:N' / 'gpu:model:N' (per node) times its nodes, whichever is larger."""

    def number(value: object, default: int = 0) -> int:
        try:
            return int(str(value))
        except ValueError:
            return default

    total = number(resources.get("gpu", 0))
    gres = str(resources.get("gres", ""))
    per_node = 0
    for item in gres.split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            per_node += number(parts[-1], 1) if len(parts) > 1 else 1
    return max(total, per_node * number(resources.get("nodes", 1), 1))


def measured_hours(run_dir: str | Path, experiments: Sequence[str]) -> dict[tuple[str, str], list]:
    """Wall hours of each benchmark file under RUN_DIR/logs/benchmarks/, by (rule, experiment);
    the experiment is '' where the path names none of `experiments`."""
    from scdpo.results.cost import benchmark_records

    folder = Path(run_dir) / "logs" / "benchmarks"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no benchmark files of an earlier run there")
    hours: dict[tuple[str, str], list] = {}
    for record in benchmark_records(run_benchmark_jobs(folder, experiments)):
        if not math.isnan(record["s"]):
            hours.setdefault((record["rule"], record["experiment"]), []).append(record["s"] / 3600)
    return hours


def run_benchmark_jobs(folder: Path, experiments: Sequence[str]) -> list[tuple[Path, str, str]]:
    """(path, rule, experiment) of every benchmark file of an earlier run's logs/benchmarks/
    folder, laid out as rules/targets.smk writes it (<rule>/<exp>.tsv, <rule>/<exp>/<job>.tsv):
    the experiment is the first part after the rule that names one of `experiments`, else ''."""
    jobs = []
    for path in sorted(folder.rglob("*.tsv")):
        rule, *rest = path.relative_to(folder).with_suffix("").parts
        jobs.append((path, rule, next((part for part in rest if part in experiments), "")))
    return jobs


@dataclass
class PlanRow:
    rule: str
    jobs: int = 0
    gpus: list = field(default_factory=list)
    engine_loads: int = 0
    hours: list = field(default_factory=list)
    # "measured", "measured (other exp.)" or "runtime limit"
    source: str = ""
    files: int = 0
    trains: bool = False

    @property
    def gpu_hours(self) -> float:
        return sum(g * h for g, h in zip(self.gpus, self.hours, strict=True))


def job_hours(job: PlannedJob, measured: Mapping[tuple[str, str], list]) -> tuple[float, str, int]:
    """(hours, source, files): the mean wall time of the rule's measured jobs of the same
    experiment, else of all its measured jobs, else the job's runtime limit."""
    own = measured.get((job.rule, job.wildcards.get("exp", "")), [])
    if own:
        return sum(own) / len(own), "measured", len(own)
    every = [h for (rule, _), hours in measured.items() if rule == job.rule for h in hours]
    if every:
        return sum(every) / len(every), "measured (other exp.)", len(every)
    return job.runtime_h, "runtime limit", 0


def plan_rows(
    jobs: Sequence[PlannedJob],
    measured: Mapping[tuple[str, str], list] | None = None,
    order: Sequence[str] = (),
) -> tuple[list[PlanRow], PlanRow]:
    """One row per rule with GPU jobs, engine loads or a `nodes` resource (the trainings), in
    `order` (the dry-run's Job stats), else of their first job; and one row of every other job
    (CPU only, no hours)."""
    measured = measured or {}
    rows: dict[str, PlanRow] = {}
    other = PlanRow("other (CPU)")
    for job in jobs:
        trains = "nodes" in job.resources
        if not (job.gpus or job.rule in GENERATION_RULES or trains):
            other.jobs += 1
            continue
        row = rows.setdefault(job.rule, PlanRow(job.rule, trains=trains))
        hours, source, files = job_hours(job, measured)
        row.jobs += 1
        row.gpus.append(job.gpus)
        row.engine_loads += job.rule in GENERATION_RULES
        row.hours.append(hours)
        row.files = max(row.files, files)
        if not row.source or source == "measured (other exp.)":
            row.source = source
    rank = {rule: i for i, rule in enumerate(order)}
    return sorted(rows.values(), key=lambda r: rank.get(r.rule, len(rank))), other


def _hours(value: float, bound: bool) -> str:
    if math.isnan(value):
        return "?"
    return ("≤ " if bound else "") + (
        f"{value:,.2f}" if value >= 1 or not value else f"{value:.2g}"
    )


def format_plan(
    rows: Sequence[PlanRow], other: PlanRow, title: str = "", profile: bool = False
) -> str:
    """The plan as a markdown table, notes (profile: whether the dry-run had one), and the
    headline as the last line."""
    header = ["rule", "jobs", "GPUs/job", "engine loads", "hours/job", "hours from", "GPU-hours"]
    table = []
    for row in rows:
        bound = row.source == "runtime limit"
        low, high = min(row.gpus), max(row.gpus)
        source = row.source + (f", {row.files} file{'s' * (row.files > 1)}" if row.files else "")
        table.append(
            [
                row.rule,
                str(row.jobs),
                str(low) if low == high else f"{low}-{high}",
                str(row.engine_loads),
                _hours(sum(row.hours) / len(row.hours), bound),
                source,
                _hours(row.gpu_hours, bound) if high else "",
            ]
        )
    measured = sum(r.gpu_hours for r in rows if r.source != "runtime limit")
    bounded = sum(r.gpu_hours for r in rows if r.source == "runtime limit")
    gpu_jobs = sum(1 for r in rows for g in r.gpus if g)
    loads = sum(r.engine_loads for r in rows)
    jobs = sum(r.jobs for r in rows) + other.jobs
    if other.jobs:
        table.append([other.rule, str(other.jobs), "0", "0", "", "", ""])
    total = _hours(measured + bounded, bool(bounded) and not measured)
    table.append(["total", str(jobs), "", str(loads), "", "", total])
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [title] if title else []
    out += [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(cells) for cells in table]
    idle = [r.rule for r in rows if r.trains and not max(r.gpus)]
    if idle:
        out.append(
            f"Note: {', '.join(idle)} plan no GPUs: "
            + (
                "the profile's set-resources give them no gres (a training's GPUs: gres x nodes)."
                if profile
                else "a training's GPUs are gres x nodes from a cluster profile's set-resources;"
                " add --profile profiles/slurm."
            )
        )
    if measured and bounded:
        how = f" ({measured:,.1f} measured + at most {bounded:,.1f} from runtime limits)"
    else:
        how = " (runtime limits)" if bounded else " (measured)" if measured else ""
    out.append(
        f"Plan: {gpu_jobs} GPU jobs of {jobs}, {loads} engine loads, "
        f"{'at most ' if bounded and not measured else ''}{measured + bounded:,.1f} GPU-hours{how}"
    )
    return "\n".join(out)


def dry_run(args: Sequence[str], cwd: str | Path = ".") -> str:
    """`python -m snakemake -n` with `args` in `cwd`: its output (stdout and stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    if result.returncode:
        raise RuntimeError(f"snakemake -n failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return result.stdout


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This command's own option, and every other one for snakemake, in their order."""
    parser = argparse.ArgumentParser(
        prog="python -m scdpo.results.plan",
        description="GPU jobs, engine loads and GPU-hours per rule of `snakemake -n`. Every "
        "other option (--configfile, --profile, --config, --forceall, targets) goes to snakemake.",
        # --config must reach snakemake, not be read as an abbreviation of an option here.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--rates-from",
        metavar="RUN_DIR",
        help="an earlier run's folder: hours per job from its logs/benchmarks/ files",
    )
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None, cwd: str | Path = ".") -> int:
    known, args = parse_args(argv)
    profile = any(a == "--profile" or a.startswith("--profile=") for a in args)
    rates = known.rates_from and Path(cwd, known.rates_from, "logs", "benchmarks")
    if rates and not rates.is_dir():
        print(f"{rates}: no benchmark files of an earlier run there", file=sys.stderr)
        return 1
    try:
        output = dry_run(args, cwd)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    jobs = parse_dry_run(output)
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    stats = job_stats(output)
    if counts != stats:
        print("the job blocks disagree with the dry-run's Job stats", file=sys.stderr)
        return 1
    experiments = sorted({j.wildcards["exp"] for j in jobs if "exp" in j.wildcards})
    measured = measured_hours(Path(cwd, known.rates_from), experiments) if rates else {}
    rows, other = plan_rows(jobs, measured, list(stats))
    title = " ".join(["snakemake -n", *args])
    print(format_plan(rows, other, title=f"`{title}`", profile=profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
