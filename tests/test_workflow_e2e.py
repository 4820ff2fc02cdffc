"""The whole workflow on config/micro.yaml (same DAG as the default, smaller numbers)."""

from __future__ import annotations

import json
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


# Jobs downstream of any change: the tables, the credit pages (they read the DPO models), the
# cost table (it reads the benchmark file of every job that ran), and the data statistics.
TABLES = {"table_accuracy": 1, "table_cost": 1}
AFTER_DPO = {**TABLES, "credit_assign": 1}
AFTER_DATA = {**AFTER_DPO, "data_stats": 1}
SC_AND_AFTER = {
    "negatives_step_controlled": 2,
    "negatives_merge": 1,
    "pairs_build": 4,
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
        {**SC_AND_AFTER, "pairs_build": 3, "dpo_train": 3, "eval_predict": 3, **AFTER_DATA},
    ),
    "dpo_max_length": (
        lambda e: e["dpo"].update(max_length=512),
        # the data table counts the pairs
        {"pairs_build": 4, "dpo_train": 4, "eval_predict": 4, **AFTER_DATA},
    ),
    "sampling_k": (
        lambda e: e["sampling"].update(max_samples=12),
        {"solutions_sample": 2, "solutions_merge": 1, **SC_AND_AFTER, **AFTER_DATA},
    ),
    # A second seed: one more training and evaluation per variant; the first seed's are kept
    # (the credit pages read the recipe seed's models only).
    "dpo_second_seed": (
        lambda e: e["dpo"].update(seeds=[0, 1]),
        {"dpo_train": 4, "eval_predict": 4, **TABLES},
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
            "pilot_predict": 2,
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
    import shutil

    # A sibling of the micro run: the interpreter's path relative to the run (a param of the
    # training rules) stays the same.
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
        shutil.copytree(
            logs / "eval_predict/micro" / variant, logs / "eval_predict/micro" / f"{variant}-seed1"
        )

    def seeds(*values):
        return _changed_config(
            workdir, lambda c: c["experiments"]["micro"]["dpo"].update(seeds=list(values))
        )

    two = snakemake(workdir, "-n", "--configfile", seeds(0, 1))
    assert two.returncode == 0, two.output[-3000:]
    assert planned_jobs(two.output).keys() <= set(TABLES), two.output[-3000:]
    three = snakemake(workdir, "-n", "--configfile", seeds(0, 1, 2))
    assert three.returncode == 0, three.output[-3000:]
    assert planned_jobs(three.output) == {
        "dpo_train": len(variants),
        "eval_predict": len(variants),
        **TABLES,
    }
    assert _planned_outputs(three.output, "dpo_train") == {
        f"results/micro/models/{variant}-seed2" for variant in variants
    }
