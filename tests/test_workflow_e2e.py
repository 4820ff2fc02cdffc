"""The whole workflow on config/micro.yaml (same DAG as the default, smaller numbers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_run import REPO, planned_jobs, snakemake

from scdpo.grading import grade
from scdpo.jsonl import read_jsonl
from scdpo.solution import Block, final_text, render_blocks, render_prompt

pytestmark = pytest.mark.slow
MICRO = REPO / "config" / "micro.yaml"


def test_table_has_every_model_row_and_pair_counts(micro_run):
    import pandas as pd

    table = pd.read_csv(micro_run / "results" / "accuracy.csv")
    assert list(table["model"]) == ["SFT", "DPO", "DPO (data-equal)", "SCDPO", "Step-DPO"]
    assert table["synthetic_test"].between(0, 100).all()
    counts = table.set_index("model")
    assert counts.loc["SCDPO", "step-controlled pairs"] > 0
    assert counts.loc["DPO", "step-controlled pairs"] == 0
    # Step-DPO learns from step-level pairs only, cut from the same generations as SCDPO's.
    assert (
        0
        < counts.loc["Step-DPO", "step-level pairs"]
        <= counts.loc["SCDPO", "step-controlled pairs"]
    )
    assert counts.loc["Step-DPO", "pairs"] == counts.loc["Step-DPO", "step-level pairs"]
    differences = pd.read_csv(micro_run / "results" / "tables" / "accuracy_differences.csv")
    assert "SCDPO - Step-DPO" in set(differences["comparison"])
    assert "| SCDPO" in (micro_run / "results" / "accuracy.md").read_text()


def test_predictions_record_solution_answer_and_verdict(micro_run):
    path = micro_run / "results/micro/predictions/scdpo/synthetic_test.jsonl"
    records = list(read_jsonl(path))
    assert len(records) == 30
    for record in records:
        assert {"question", "answer", "blocks", "extracted", "correct"} <= record.keys()
        blocks = [Block.from_json(b) for b in record["blocks"]]
        if record["finished"]:
            assert record["correct"] == grade(final_text(blocks), record["answer"])


def test_step_controlled_pairs_share_the_prefix_and_differ_in_correctness(micro_run):
    negatives = {
        q["id"]: q for q in read_jsonl(micro_run / "results/micro/step_control/negatives.jsonl")
    }
    pairs_dir = micro_run / "results/micro/pairs/scdpo"
    pairs = [p for name in ("train.jsonl", "eval.jsonl") for p in read_jsonl(pairs_dir / name)]
    sc_pairs = [p for p in pairs if p["kind"] == "step_controlled"]
    assert sc_pairs
    system = yaml.safe_load(MICRO.read_text())["experiments"]["micro"]["system_prompt"]
    for pair in sc_pairs:
        question = negatives[pair["id"]]
        chosen = [Block.from_json(b) for b in question["chosen"]]
        k = pair["k"]
        assert pair["prompt"] == render_prompt(question["question"], system) + render_blocks(
            chosen[: k + 1]
        )
        # The chosen suffix completes the preferred solution: right; the rejected one: wrong.
        assert grade(pair["chosen"], question["answer"])
        assert not grade(pair["rejected"], question["answer"])
        assert pair["chosen"] != pair["rejected"]
        assert len(pair["temperatures"]) >= 1 and pair["temperatures"][0] == pytest.approx(1.1)


def test_sampled_labels_follow_the_method(micro_run):
    sampled = list(read_jsonl(micro_run / "results/micro/sampling/samples.jsonl"))
    assert len(sampled) == 40
    for question in sampled:
        for sample in question["samples"]:
            blocks = [Block.from_json(b) for b in sample["blocks"]]
            right = sample["finished"] and grade(final_text(blocks), question["answer"])
            assert sample["correct"] == right
            assert not (sample["preferred"] and sample["dispreferred"])
            assert set(sample["temperatures"]) == {1.0}
    summary = json.loads((micro_run / "results/micro/pairs/dpo/summary.json").read_text())
    assert summary["by_kind"] == {"naive": summary["pairs_kept"]}


def _changed_config(run: Path, edit) -> str:
    config = yaml.safe_load((run / "micro.yaml").read_text())
    edit(config)
    (run / "changed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return str(run / "changed.yaml")


def test_no_op_rerun_plans_nothing(micro_run):
    result = snakemake(micro_run, "-n", "--configfile", str(micro_run / "micro.yaml"))
    assert result.returncode == 0, result.output[-3000:]
    assert planned_jobs(result.output) == {}


def test_the_same_values_written_another_way_plan_nothing(micro_run):
    """Keys in another order, 1 for 1.0 and a --config override of a value to itself."""
    config = yaml.safe_load((micro_run / "micro.yaml").read_text())
    micro = config["experiments"]["micro"]
    assert isinstance(micro["sampling"]["temperature"], float)
    micro["sampling"]["temperature"] = int(micro["sampling"]["temperature"])
    (micro_run / "sorted.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    result = snakemake(micro_run, "-n", "--configfile", str(micro_run / "sorted.yaml"))
    assert result.returncode == 0, result.output[-3000:]
    assert planned_jobs(result.output) == {}


def test_another_entry_point_or_venv_path_plans_nothing(micro_run, tmp_path):
    """The run used `<venv>/bin/python3 -m snakemake`; neither the `snakemake` script nor
    `python -m snakemake` through another path to the venv plans a job (the interpreter is no
    param; the training command reads it from the environment)."""
    venv = tmp_path / "venv"
    venv.symlink_to(sys.prefix, target_is_directory=True)
    entry_points = [
        [str(Path(sys.prefix) / "bin" / "snakemake")],
        [str(venv / "bin" / "python"), "-m", "snakemake"],
    ]
    for entry in entry_points:
        result = subprocess.run(
            [*entry, "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(micro_run)]
            + ["--configfile", str(micro_run / "micro.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        assert planned_jobs(result.stdout) == {}, (entry, result.stdout[-3000:])


# Jobs downstream of any change: the tables, the credit pages (they read the DPO models), the
# cost table (it reads the benchmark file of every job that ran), and the data statistics.
TABLES = {"table_accuracy": 1, "table_cost": 1}
CURVES = {"training_curves": 1}  # they read every training
AFTER_DPO = {**TABLES, **CURVES, "credit_assign": 1}
AFTER_DATA = {**AFTER_DPO, "data_stats": 1}
SC_AND_AFTER = {
    "negatives_step_controlled": 2,
    "negatives_merge": 1,
    "pairs_build": 4,
    "reference_logps": 4,  # micro computes the reference's log-probs once per pair set
    "dpo_train": 4,
    "eval_predict": 4,
}

# A changed key -> exactly the jobs it must re-run (micro: 2 shards each, one benchmark).
RERUN_MATRIX = {
    "dpo_beta": (
        lambda e: e["dpo"].update(beta=0.3),
        {"dpo_train": 4, "eval_predict": 4, **AFTER_DPO},
    ),
    "sc_schedule": (
        lambda e: e["step_control"].update(schedule="released_code"),
        # plain DPO reads naive pairs only: its pairs, training and evaluation stay
        {
            **SC_AND_AFTER,
            **dict(pairs_build=3, reference_logps=3, dpo_train=3, eval_predict=3),
            **AFTER_DATA,
        },
    ),
    "dpo_max_length": (
        lambda e: e["dpo"].update(max_length=512),
        # the data table counts the pairs
        {"pairs_build": 4, "reference_logps": 4, "dpo_train": 4, "eval_predict": 4, **AFTER_DATA},
    ),
    "sampling_k": (
        lambda e: e["sampling"].update(max_samples=12),
        {"solutions_sample": 2, "solutions_merge": 1, **SC_AND_AFTER, **AFTER_DATA},
    ),
    # A second seed: one more training and evaluation per variant; the first seed's are kept
    # (the credit pages read the recipe seed's models only).
    "dpo_second_seed": (
        lambda e: e["dpo"].update(seeds=[0, 1]),
        {"dpo_train": 4, "eval_predict": 4, **TABLES, **CURVES},
    ),
    # Dropping a variant re-runs only what reads every variant.
    "without_step_dpo": (
        lambda e: e.update(variants=["dpo", "dpo_data_equal", "scdpo"]),
        {**AFTER_DATA},
    ),
    "sft_learning_rate": (
        lambda e: e["sft"].update(learning_rate=1.0e-3),
        {
            "sft_train": 1,
            "solutions_sample": 2,
            "solutions_merge": 1,
            **SC_AND_AFTER,
            "eval_predict": 5,
            "pilot_predict": 1,  # one job for both temperatures
            "pilot_plot": 1,
            **AFTER_DATA,
        },
    ),
}


@pytest.mark.parametrize("change", sorted(RERUN_MATRIX))
def test_rerun_matrix(micro_run, change):
    edit, expected = RERUN_MATRIX[change]
    changed = _changed_config(micro_run, lambda c: edit(c["experiments"]["micro"]))
    result = snakemake(micro_run, "-n", "--configfile", changed)
    assert result.returncode == 0, result.output[-3000:]
    assert planned_jobs(result.output) == expected


def test_a_new_benchmark_adds_only_its_evaluations_and_the_table(micro_run):
    def add_benchmark(config):
        config["benchmarks"]["synthetic_hard"] = {
            "source": "synthetic",
            "n": 10,
            "seed": 9,
            "max_ops": 3,
            "offset": 2_000_000,
        }
        config["experiments"]["micro"]["benchmarks"].append("synthetic_hard")

    changed = _changed_config(micro_run, add_benchmark)
    result = snakemake(micro_run, "-n", "--configfile", changed)
    assert result.returncode == 0, result.output[-3000:]
    expected = {"benchmark_prepare": 1, "eval_predict": 5, **TABLES}
    assert planned_jobs(result.output) == expected


DATA_FILES = [
    "sampling/samples.jsonl",
    "step_control/negatives.jsonl",
    *[
        f"pairs/{v}/{split}.jsonl"
        for v in ("dpo", "dpo_data_equal", "scdpo", "step_dpo")
        for split in ("train", "eval")
    ],
]


def test_data_files_do_not_depend_on_shards_batch_size_or_chunks(micro_run, tmp_path):
    """3 shards instead of 2, engine batch 16 instead of 128, chunks of 3 instead of 10: the same
    samples, negatives and pairs, byte for byte (records in draw order, not finishing order)."""
    import shutil

    workdir = tmp_path / "reshard"
    shutil.copytree(micro_run / "results", workdir / "results")
    shutil.rmtree(workdir / "results" / "micro" / "sampling")
    shutil.rmtree(workdir / "results" / "micro" / "step_control")
    shutil.rmtree(workdir / "results" / "micro" / "pairs")

    def reshard(config):
        micro = config["experiments"]["micro"]
        micro["sampling"]["shards"] = micro["step_control"]["shards"] = 3
        micro["generation"]["backend"]["batch_size"] = 16
        micro["generation"]["chunk_size"] = 3

    changed = _changed_config(micro_run, reshard)
    targets = [f"results/micro/{name}" for name in DATA_FILES]
    # Targets first: --configfile takes every argument after it.
    result = snakemake(workdir, *targets, "--cores", "2", "--configfile", changed)
    assert result.returncode == 0, result.output[-3000:]
    for name in DATA_FILES:
        ours = (workdir / "results" / "micro" / name).read_bytes()
        assert ours == (micro_run / "results" / "micro" / name).read_bytes(), name


def _planned_outputs(output: str, rule: str) -> set[str]:
    """The output paths of a dry-run's jobs of `rule`."""
    outputs = set()
    for block in output.split("\nrule ")[1:]:
        if block.startswith(f"{rule}:"):
            line = next(x for x in block.splitlines() if x.strip().startswith("output:"))
            outputs |= {o.strip() for o in line.split(":", 1)[1].split(",")}
    return outputs


def test_adding_a_third_seed_plans_only_its_trainings_and_evaluations(micro_run, tmp_path_factory):
    """Seeds 0 and 1 finished (seed 1's models and predictions stand in as copies of seed 0's,
    newer than their inputs), then seeds: [0, 1, 2] plans seed 2's jobs and the tables only."""
    workdir = tmp_path_factory.mktemp("seeds")
    shutil.copytree(micro_run, workdir, symlinks=True, dirs_exist_ok=True)
    variants = yaml.safe_load(MICRO.read_text())["experiments"]["micro"]["variants"]
    for variant in variants:
        results = workdir / "results" / "micro"
        shutil.copytree(results / "models" / variant, results / "models" / f"{variant}-seed1")
        shutil.copytree(
            results / "predictions" / variant, results / "predictions" / f"{variant}-seed1"
        )
        logs = workdir / "logs" / "benchmarks"
        shutil.copy(
            logs / "dpo_train/micro" / f"{variant}.tsv",
            logs / "dpo_train/micro" / f"{variant}-seed1.tsv",
        )
        shutil.copy(
            logs / "eval_predict/micro" / f"{variant}.tsv",
            logs / "eval_predict/micro" / f"{variant}-seed1.tsv",
        )

    def seeds(*values):
        return _changed_config(
            workdir, lambda c: c["experiments"]["micro"]["dpo"].update(seeds=list(values))
        )

    two = snakemake(workdir, "-n", "--configfile", seeds(0, 1))
    assert two.returncode == 0, two.output[-3000:]
    assert planned_jobs(two.output).keys() <= set(TABLES) | set(CURVES), two.output[-3000:]
    three = snakemake(workdir, "-n", "--configfile", seeds(0, 1, 2))
    assert three.returncode == 0, three.output[-3000:]
    assert planned_jobs(three.output) == {
        "dpo_train": len(variants),
        "eval_predict": len(variants),
        **TABLES,
        **CURVES,
    }
    assert _planned_outputs(three.output, "dpo_train") == {
        f"results/micro/models/{variant}-seed2" for variant in variants
    }


# --- content, not paths; code versions ------------------------------------------------------------


def _copy_run(micro_run: Path, tmp_path_factory, name: str) -> Path:
    """A copy of the finished micro run (times kept), to run or touch jobs in."""
    workdir = tmp_path_factory.mktemp(name)
    shutil.copytree(micro_run, workdir, symlinks=True, dirs_exist_ok=True)
    return workdir


def _plan(workdir: Path, configfile: str, snakefile: Path = REPO / "Snakefile") -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(snakefile)]
        + ["--directory", str(workdir), "--configfile", configfile],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    return planned_jobs(result.stdout)


def _local_benchmark(path: Path, questions: list[tuple[str, str]]) -> None:
    """A benchmark JSONL over 1 MB (Snakemake checksums only smaller files): a few questions,
    each with a long field the loader does not read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"question": q, "extra": {"answer": a, "note": "x" * 600_000}})
        for q, a in questions
    ]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 1_000_000


LOCAL_QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "7"),
    ("A box holds 6 pens. How many pens are in 5 boxes?", "30"),
    ("Sara had 20 stickers and gave away 8. How many are left?", "12"),
]


def test_a_local_benchmark_file_reruns_its_jobs_on_an_edit_not_on_new_times(
    micro_run, tmp_path_factory
):
    """A local JSONL benchmark (over 1 MB) added and run for real (its prepare job, one
    evaluation per model, the tables); then a touch and a copy with new times plan nothing, and
    an edit plans exactly those jobs again."""
    workdir = _copy_run(micro_run, tmp_path_factory, "local_bench")
    bench = workdir / "bench" / "local.jsonl"
    _local_benchmark(bench, LOCAL_QUESTIONS)

    def add_local(config):
        config["benchmarks"]["local"] = {"source": "jsonl", "path": "bench/local.jsonl"}
        config["experiments"]["micro"]["benchmarks"].append("local")

    changed = _changed_config(workdir, add_local)
    its_jobs = {"benchmark_prepare": 1, "eval_predict": 5, **TABLES}
    result = snakemake(workdir, "--cores", "2", "--configfile", changed)
    assert result.returncode == 0, result.output[-3000:]
    assert planned_jobs(result.output) == its_jobs  # nothing else ran
    # Each model's evaluation job generated for the new benchmark only: its answers on
    # synthetic_test came back from the job's cache (the earlier run's resume files).
    for model in ("sft", "dpo", "dpo_data_equal", "scdpo", "step_dpo"):
        log = (workdir / f"logs/eval_predict/micro/{model}.log").read_text()
        resume = f"results/micro/.resume/predictions/{model}"
        cached = f"resuming: 3 of 3 chunks already done ({resume}/synthetic_test.jsonl)"
        assert cached in log, log[-2000:]
        assert f"already done ({resume}/local" not in log

    stat = bench.stat()
    os.utime(bench, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3600 * 10**9))  # touch
    assert _plan(workdir, changed) == {}
    shutil.copyfile(bench, bench.with_suffix(".copy"))  # cp or rsync without times
    os.replace(bench.with_suffix(".copy"), bench)
    assert _plan(workdir, changed) == {}
    _local_benchmark(bench, LOCAL_QUESTIONS[:2])  # one question fewer
    assert _plan(workdir, changed) == its_jobs


WORKFLOW = ["Snakefile", "rules", "workflow_scripts", "src", "config", "envs", "report", "profiles"]


def _copy_workflow(dest: Path) -> Path:
    """This checkout's workflow, times kept (Snakemake compares a script's mtime)."""
    for name in WORKFLOW:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(REPO / name, dest / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, dest / name)
    return dest / "Snakefile"


def test_a_package_code_change_reruns_its_stage_and_what_follows(micro_run, tmp_path_factory):
    """An edit of a docstring or comment in scdpo/pairs.py plans nothing; a code edit plans pair
    building and everything after it; `--touch` then records the new code as the outputs'."""
    workdir = _copy_run(micro_run, tmp_path_factory, "code")
    snakefile = _copy_workflow(tmp_path_factory.mktemp("workflow"))
    config = str(workdir / "micro.yaml")
    pairs = snakefile.parent / "src" / "scdpo" / "pairs.py"
    text = pairs.read_text()
    assert text.startswith('"""')
    pairs.write_text('"""Edited docstring. ' + text[3:] + "\n# a comment\n")
    assert _plan(workdir, config, snakefile) == {}
    pairs.write_text(pairs.read_text() + "_CHANGED = True\n")
    after_pairs = {"pairs_build": 4, "reference_logps": 4, "dpo_train": 4, "eval_predict": 4}
    after_pairs.update(AFTER_DATA)
    assert _plan(workdir, config, snakefile) == after_pairs
    touched = subprocess.run(
        [sys.executable, "-m", "snakemake", "--touch", "--cores", "1"]
        + ["--snakefile", str(snakefile), "--directory", str(workdir), "--configfile", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert touched.returncode == 0, touched.stdout[-3000:]
    assert _plan(workdir, config, snakefile) == {}
