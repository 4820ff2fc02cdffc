"""Cost: wall time, CPU time, memory and GPU-hours per stage from the jobs' benchmark files."""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from scdpo.results.render import html_page, markdown_page


def read_benchmark(path: str | Path) -> dict:
    """Wall and CPU seconds and peak RSS of one benchmark TSV (mean over repeats), plus the
    job's resources when Snakemake wrote them (--benchmark-extended)."""
    table = pd.read_csv(path, sep="\t")
    numeric = {
        c: pd.to_numeric(table[c], errors="coerce").mean()
        for c in ("s", "cpu_time", "max_rss")
        if c in table
    }
    resources = {}
    if "resources" in table and isinstance(table["resources"].iloc[0], str):
        try:
            resources = ast.literal_eval(table["resources"].iloc[0])
        except (ValueError, SyntaxError):
            resources = {}
    return {
        "s": float(numeric.get("s", math.nan)),
        "cpu_time": float(numeric.get("cpu_time", math.nan)),
        "max_rss": float(numeric.get("max_rss", math.nan)),
        "resources": resources if isinstance(resources, dict) else {},
    }


def cost_table(
    records: Sequence[dict], gpus_per_rule: Mapping[str, float], stage_order: Sequence[str] = ()
) -> pd.DataFrame:
    """records: {rule, experiment, s, cpu_time, max_rss, resources}; gpus_per_rule: GPUs per job
    by rule, or by "<rule>/<experiment>" where the experiment decides. One row per (experiment,
    rule): jobs, wall hours (sum and longest job), CPU hours, peak RSS, GPUs per job and
    GPU-hours (rules with GPUs only); a final 'total' row."""
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        planned = gpus_per_rule.get(
            f"{r['rule']}/{r['experiment']}", gpus_per_rule.get(r["rule"], 0)
        )
        gpus = float(r.get("resources", {}).get("gpu", planned) or 0)
        row = rows.setdefault(
            (r["experiment"], r["rule"]),
            {
                "experiment": r["experiment"],
                "stage": r["rule"],
                "jobs": 0,
                "wall_h": 0.0,
                "longest_job_h": 0.0,
                "cpu_h": 0.0,
                "max_rss_gb": 0.0,
                "gpus": 0.0,
                "gpu_h": 0.0,
            },
        )
        hours = _nan0(r["s"]) / 3600
        row["jobs"] += 1
        row["wall_h"] += hours
        row["longest_job_h"] = max(row["longest_job_h"], hours)
        row["cpu_h"] += _nan0(r["cpu_time"]) / 3600
        row["max_rss_gb"] = max(row["max_rss_gb"], _nan0(r["max_rss"]) / 1024)
        row["gpus"] = max(row["gpus"], gpus)
        row["gpu_h"] += gpus * hours
    order = {name: i for i, name in enumerate(stage_order)}
    table = pd.DataFrame(
        sorted(
            rows.values(),
            key=lambda r: (r["experiment"], order.get(r["stage"], len(order)), r["stage"]),
        ),
        columns=[
            "experiment",
            "stage",
            "jobs",
            "wall_h",
            "longest_job_h",
            "cpu_h",
            "max_rss_gb",
            "gpus",
            "gpu_h",
        ],
    )
    total = {
        "experiment": "total",
        "stage": "",
        "jobs": int(table["jobs"].sum()),
        "wall_h": table["wall_h"].sum(),
        "longest_job_h": table["longest_job_h"].max(),
        "cpu_h": table["cpu_h"].sum(),
        "max_rss_gb": table["max_rss_gb"].max(),
        "gpus": math.nan,
        "gpu_h": table["gpu_h"].sum(),
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    # No GPUs used: blank, not "0 GPU-hours" (which would read as measured).
    table.loc[table["gpus"] == 0, ["gpus", "gpu_h"]] = math.nan
    if not total["gpu_h"]:
        table.loc[table.index[-1], "gpu_h"] = math.nan
    return table


def _nan0(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)


def benchmark_records(jobs: Iterable[tuple[str | Path, str, str]]) -> list[dict]:
    """The benchmark files of jobs given as (path, rule, experiment), read."""
    return [
        {"rule": rule, "experiment": experiment, **read_benchmark(path)}
        for path, rule, experiment in jobs
    ]


def cost_report(
    benchmark_files: Sequence[str],
    keys: Sequence[tuple[str, str]],
    gpus_per_rule: Mapping[str, float],
    out: Mapping[str, str],
) -> None:
    """out: csv, md, html. `keys`: the (rule, experiment) of each benchmark file. The jobs'
    benchmark files are the rule's declared inputs, so files of earlier runs are not counted;
    rules without benchmark: (cheap aggregation) are not either."""
    jobs = [(path, rule, exp) for path, (rule, exp) in zip(benchmark_files, keys, strict=True)]
    records = benchmark_records(jobs)
    table = cost_table(records, gpus_per_rule, list(gpus_per_rule))
    table.to_csv(out["csv"], index=False)
    shown = table.copy()
    for column in ("wall_h", "longest_job_h", "cpu_h", "gpu_h"):
        shown[column] = shown[column].map(lambda v: "" if math.isnan(v) else f"{v:.3f}")
    shown["max_rss_gb"] = shown["max_rss_gb"].map(lambda v: f"{v:.2f}")
    shown["gpus"] = shown["gpus"].map(lambda v: "" if math.isnan(v) else f"{v:g}")
    note = (
        "From the rules' benchmark files (logs/benchmarks/). Hours of wall time summed over a "
        "stage's jobs (jobs may have run in parallel); GPU-hours = GPUs per job (the rule's gpu "
        "resource, after the profile's set-resources) x wall hours, only where GPUs were used."
    )
    sections = [("Cost per stage", shown)]
    Path(out["md"]).write_text(markdown_page("Cost", sections, note))
    Path(out["html"]).write_text(html_page("Cost", sections, note))
