"""The cost plan (scdpo.results.plan): a real dry-run of config/micro.yaml parsed job by job,
GPUs per job from the resources, hours per job from benchmark files or the runtime limit."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from workflow_run import planned_jobs

from scdpo.results.plan import (
    GENERATION_RULES,
    PlannedJob,
    dry_run,
    format_plan,
    job_gpus,
    job_stats,
    main,
    measured_hours,
    parse_args,
    parse_dry_run,
    plan_rows,
)

REPO = Path(__file__).resolve().parents[1]
MICRO = ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config/micro.yaml")]


@pytest.fixture(scope="module")
def micro_plan(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("plan")
    return dry_run([*MICRO, "--directory", str(workdir)], cwd=workdir)


def test_the_parser_reads_every_planned_job_with_its_wildcards_and_resources(micro_plan):
    jobs = parse_dry_run(micro_plan)
    counts = Counter(job.rule for job in jobs)
    assert counts == Counter(job_stats(micro_plan))
    assert counts - Counter({"all": 1}) == planned_jobs(micro_plan)
    shards = [job for job in jobs if job.rule == "solutions_sample"]
    assert sorted(job.wildcards["shard"] for job in shards) == ["0", "1"]
    assert {job.wildcards["exp"] for job in shards} == {"micro"}
    # Local CPU engine: no GPU; the rule's runtime (12 h) is the job's limit.
    assert {(job.gpus, job.runtime_h) for job in shards} == {(0, 12.0)}
    (sft,) = [job for job in jobs if job.rule == "sft_train"]
    assert sft.resources["nodes"] == "1" and sft.gpus == 0


def test_engine_loads_are_the_jobs_of_the_generation_rules(micro_plan):
    jobs = parse_dry_run(micro_plan)
    rows, other = plan_rows(jobs, order=list(job_stats(micro_plan)))
    planned = planned_jobs(micro_plan)
    loads = {row.rule: row.engine_loads for row in rows if row.engine_loads}
    assert loads == {rule: planned[rule] for rule in GENERATION_RULES}
    # Trainings (a nodes resource) are listed: their GPUs come from a profile. Every other job
    # is one CPU row.
    trainings = {"sft_train", "reference_logps", "dpo_train"}
    assert {row.rule for row in rows} == {*GENERATION_RULES, *trainings}
    assert other.jobs == len(jobs) - sum(row.jobs for row in rows)
    # Without a profile no training asks for GPUs, and the plan says so before its headline.
    note = format_plan(rows, other).splitlines()[-2]
    assert note.startswith("Note: sft_train, reference_logps, dpo_train plan no GPUs"), note
    assert note.endswith("add --profile profiles/slurm.")
    # The rules take the list from the package, and each name is a rule.
    rules = "".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    assert "from scdpo.results.plan import GENERATION_RULES" in rules
    assert not re.search(r"^GENERATION_RULES\s*=", rules, re.M)
    assert all(f"rule {name}:" in rules for name in GENERATION_RULES)


def test_nothing_to_do_is_an_empty_plan():
    jobs = parse_dry_run("Building DAG of jobs...\nNothing to be done (all requested files exist).")
    assert jobs == [] and job_stats("Nothing to be done") == {}
    rows, other = plan_rows(jobs)
    assert format_plan(rows, other).splitlines()[-1] == (
        "Plan: 0 GPU jobs of 0, 0 engine loads, 0.0 GPU-hours"
    )


@pytest.mark.parametrize(
    ("resources", "gpus"),
    [
        ({}, 0),
        ({"gpu": "2"}, 2),
        ({"gpu": "0", "gres": "gpu:4", "nodes": "4"}, 16),
        ({"gres": "gpu:a100:2"}, 2),
        ({"gres": "gpu"}, 1),
        ({"gpu": "<TBD>", "gres": "shard:2"}, 0),
    ],
)
def test_gpus_per_job_are_the_gpu_total_or_gres_per_node_times_nodes(resources, gpus):
    assert job_gpus(resources) == gpus


def _benchmark(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:00:00\t100.0\t{seconds / 2}\n")


def test_hours_per_job_are_measured_by_experiment_then_by_rule_else_the_runtime_limit(tmp_path):
    bench = tmp_path / "logs" / "benchmarks"
    _benchmark(bench / "solutions_sample" / "big" / "shard0-of2.tsv", 3600)
    _benchmark(bench / "solutions_sample" / "big" / "shard1-of2.tsv", 7200)
    _benchmark(bench / "solutions_sample" / "small" / "shard0-of1.tsv", 360)
    _benchmark(bench / "sft_train" / "elsewhere.tsv", 1800)
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        measured_hours(tmp_path / "elsewhere", [])
    measured = measured_hours(tmp_path, ["big", "small"])
    assert measured == {
        ("solutions_sample", "big"): [1.0, 2.0],
        ("solutions_sample", "small"): [0.1],
        ("sft_train", ""): [0.5],
    }

    def job(rule: str, exp: str, **resources: str) -> PlannedJob:
        return PlannedJob(rule, {"exp": exp}, {"runtime": "360", **resources})

    jobs = [
        job("sft_train", "big", nodes="4", gres="gpu:4", gpu="0"),
        job("solutions_sample", "big", gpu="2"),
        job("solutions_sample", "big", gpu="2"),
        job("solutions_sample", "small", gpu="1"),
        job("eval_predict", "big", gpu="2"),
        job("table_accuracy", ""),
    ]
    rows, other = plan_rows(jobs, measured, order=["solutions_sample", "sft_train"])
    by_rule = {row.rule: row for row in rows}
    assert [row.rule for row in rows] == ["solutions_sample", "sft_train", "eval_predict"]
    assert by_rule["solutions_sample"].hours == [1.5, 1.5, 0.1]
    assert by_rule["solutions_sample"].gpu_hours == pytest.approx(6.1)
    assert by_rule["solutions_sample"].source == "measured"
    assert by_rule["sft_train"].source == "measured (other exp.)"
    assert by_rule["sft_train"].gpu_hours == pytest.approx(8.0)
    assert by_rule["eval_predict"].source == "runtime limit"
    assert by_rule["eval_predict"].gpu_hours == 12.0
    assert other.jobs == 1
    text = format_plan(rows, other).splitlines()
    (eval_row,) = [line for line in text if line.startswith("| eval_predict")]
    assert "≤ 6.00" in eval_row and "≤ 12.00" in eval_row
    assert text[-2].startswith("| total ") and text[-2].endswith("| 26.10     |")
    assert text[-1] == (
        "Plan: 5 GPU jobs of 6, 4 engine loads, 26.1 GPU-hours "
        "(14.1 measured + at most 12.0 from runtime limits)"
    )
    rows, other = plan_rows(jobs[-2:])
    assert format_plan(rows, other).splitlines()[-1] == (
        "Plan: 1 GPU jobs of 2, 1 engine loads, at most 12.0 GPU-hours (runtime limits)"
    )


def test_the_command_runs_the_dry_run_with_the_profile_and_prints_the_headline_last(
    tmp_path, capsys
):
    """config/micro.yaml under the SLURM profile: trainings get gres gpu:4 x 1 node, the credit
    job 1 GPU; rates from an earlier run's benchmark file of sft_train."""
    _benchmark(tmp_path / "run" / "logs" / "benchmarks" / "sft_train" / "micro.tsv", 900)
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = [*MICRO, "--directory", str(workdir), "--profile", str(REPO / "profiles" / "slurm")]
    assert main([*args, "--rates-from", str(tmp_path / "run")], cwd=workdir) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert "| 1    | 4        | 0            | 0.25      | measured, 1 file " in rows["sft_train"]
    assert "runtime limit" in rows["dpo_train"] and "| 4        |" in rows["dpo_train"]
    assert "| 1        |" in rows["credit_assign"]
    loads = sum(int(rows[rule].split("|")[4]) for rule in GENERATION_RULES)
    trainings = int(rows["dpo_train"].split("|")[2]) + int(rows["reference_logps"].split("|")[2])
    assert "| 4        |" in rows["reference_logps"]  # under the DPO launcher, its GPUs
    assert lines[-1].startswith(f"Plan: {trainings + 2} GPU jobs of ")
    assert f", {loads} engine loads, " in lines[-1]
    bounded = sum(
        float(row.split("|")[7].strip(" ≤").replace(",", "") or 0)
        for row in rows.values()
        if "runtime limit" in row
    )
    assert lines[-1].endswith(
        f" GPU-hours (1.0 measured + at most {bounded:,.1f} from runtime limits)"
    )
    # Every training rule has its GPUs from profiles/slurm: no note of one without.
    assert not any(line.startswith("Note:") for line in lines)


def test_the_module_imports_only_the_standard_library_at_import():
    """rules/params.smk imports GENERATION_RULES from it at parse time, in Snakemake's env."""
    import ast
    import sys

    tree = ast.parse((REPO / "src/scdpo/results/plan.py").read_text())
    top = {
        (alias.name if isinstance(node, ast.Import) else node.module).split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert top <= set(sys.stdlib_module_names), top


def test_every_other_option_reaches_snakemake_in_its_order():
    argv = ["--configfile", "c.yaml", "--config", "x=1", "--rates-from", "run", "--forceall"]
    known, args = parse_args(argv)
    assert known.rates_from == "run"
    assert args == ["--configfile", "c.yaml", "--config", "x=1", "--forceall"]
