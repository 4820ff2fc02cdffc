"""config/paper.yaml at CPU scale, run end to end through the SLURM profile, as the paper path
runs (tests/paper_shaped.py builds the workspace; tests/slurm_run.py runs and checks SLURM).

The run takes the code paths that only the paper config takes: base models and datasets by
Hugging Face id, served by a stand-in hub (tests/fake_hub.py; Mistral-7B-v0.1 gated behind a
token) that only the login node reaches: the local rule hub_fetch fetches them with the user's
token into the hub cache, and every compute job runs with the hub offline, an unreachable
endpoint and no token, reading that cache. Also: MATH's seven subject configurations, InternLM2
in its released layout (converted to Llama by model_base, its remote code never run), APE210K
questions from a local file, per-source step-controlled pair limits, SFT and DPO under
`accelerate launch` with DeepSpeed ZeRO-3 on two CPU processes, and every compute stage as a
SLURM job with the profile's resources (the quick data rules are local).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fake_hub import FakeHub
from paper_shaped import (
    KEPT_EXPERIMENTS,
    PAPER,
    PAPER_SCALE,
    SUBJECTS,
    WORKSPACE,
    build,
    paper_shaped_config,
)
from slurm_cluster import ClusterInfo, slurm_cluster  # noqa: F401 (fixture)
from slurm_run import (
    REPO,
    SlurmRun,
    WorkflowUnderTest,
    assert_ran_through_slurm,
    copy_workflow,
    local_rules,
    run_through_slurm,
    submitted_rules,
)

from scdpo.names import PAPER_VARIANTS, model_label

TOKEN = "hf_login_node_token"
GATED = "mistralai/Mistral-7B-v0.1"
# What a compute node without internet sees: the hub offline, its endpoint unreachable (nothing
# listens on the discard port), and no token.
COMPUTE_NODE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "HF_TOKEN": None,
}
TRAINED = ("sft", *PAPER_VARIANTS)  # paper.yaml trains the paper's three variants
# Every rule that loads a model: each of its jobs goes to SLURM (the data rules may be local).
COMPUTE_RULES = {
    "model_base",
    "sft_train",
    "solutions_sample",
    "negatives_step_controlled",
    "dpo_train",
    "reference_logps",
    "eval_predict",
    "pilot_predict",
    "credit_assign",
}


def _leaves(tree: dict, path: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def test_the_config_is_paper_yaml_with_only_the_scale_changed():
    paper = yaml.safe_load(PAPER.read_text())
    shaped = paper_shaped_config(paper)
    scaled = {path for path, _ in _leaves(PAPER_SCALE)}
    for name in KEPT_EXPERIMENTS:
        ours = dict(_leaves(shaped["experiments"][name]))
        theirs = dict(_leaves(paper["experiments"][name]))
        changed = {p for p in ours.keys() | theirs.keys() if ours.get(p, ...) != theirs.get(p, ...)}
        assert changed, name
        assert changed <= scaled, f"{name}: changed beyond the scale: {changed - scaled}"
    assert shaped["benchmarks"] == {k: paper["benchmarks"][k] for k in shaped["benchmarks"]}


PAPER_SHAPED = WorkflowUnderTest(
    "paper_shaped",
    REPO,
    extra_args=("--configfile", "paper_shaped.yaml"),
    timeout_s=2400,
    jobs=6,
)


@pytest.fixture(scope="module")
def paper_shaped_slurm(
    micro_sft: Path,
    slurm_cluster: ClusterInfo,  # noqa: F811
    tmp_path_factory,
) -> SlurmRun:
    """The workflow copied, the paper-shaped workspace built into the copy (its models and
    datasets into a stand-in hub), run via SLURM; the hub's requests in `run.hub_requests`."""
    root = tmp_path_factory.mktemp("paper_shaped")
    workdir, repos = root / "workflow", root / "hub"
    copy_workflow(PAPER_SHAPED, workdir)
    build(workdir, micro_sft, hub=repos)
    with FakeHub(repos, gated=(GATED,), token=TOKEN) as fake:
        login = {"HF_ENDPOINT": fake.url, "HF_TOKEN": TOKEN}
        login["SCDPO_HUB_CACHE"] = str(workdir / "resources" / "hub")
        run = run_through_slurm(PAPER_SHAPED, slurm_cluster, workdir, login, COMPUTE_NODE)
    run.hub_requests = list(fake.requests)
    return run


@pytest.fixture(scope="module")
def paper_shaped_run(paper_shaped_slurm: SlurmRun) -> Path:
    assert paper_shaped_slurm.returncode == 0, paper_shaped_slurm.output[-8000:]
    return paper_shaped_slurm.workdir


@pytest.mark.slow
def test_every_compute_stage_ran_as_a_slurm_job(paper_shaped_slurm, slurm_cluster):  # noqa: F811
    assert_ran_through_slurm(paper_shaped_slurm, slurm_cluster)
    assert submitted_rules(paper_shaped_slurm.output) == COMPUTE_RULES


@pytest.mark.slow
def test_the_accuracy_table_has_every_model_on_every_benchmark(paper_shaped_run):
    table = pd.read_csv(paper_shaped_run / "results" / "accuracy.csv")
    config = yaml.safe_load((paper_shaped_run / "paper_shaped.yaml").read_text())
    for name, experiment in config["experiments"].items():
        rows = table[table["experiment"] == name]
        assert set(rows["model"]) == {model_label(m) for m in TRAINED}, rows
        for benchmark in experiment["benchmarks"]:
            assert rows[benchmark].between(0, 100).all(), (name, benchmark)
        # Full test sets: every question of a file, of every MATH subject.
        assert (rows["gsm8k n"] == WORKSPACE["test_questions"]).all()
        assert (rows["math n"] == WORKSPACE["math_test_per_subject"] * len(SUBJECTS)).all()
        assert (rows.loc[rows["model"] != "SFT", "pairs"] > 0).all(), rows


@pytest.mark.slow
def test_training_ran_deepspeed_zero3_in_two_processes(paper_shaped_run):
    for name in KEPT_EXPERIMENTS:
        for model in TRAINED:
            log = json.loads(
                (
                    paper_shaped_run / "results" / name / "models" / model / "training_log.json"
                ).read_text()
            )
            parallelism = {k: log[k] for k in ("world_size", "distributed_type", "zero_stage")}
            assert parallelism == {
                "world_size": 2,
                "distributed_type": "DEEPSPEED",
                "zero_stage": 3,
            }
        launch = (paper_shaped_run / "logs" / "sft_train" / f"{name}.log").read_text()
        assert "--config_file envs/accelerate/zero3.yaml --main_process_port" in launch


@pytest.mark.slow
def test_math_training_questions_come_from_all_seven_subjects(paper_shaped_run):
    for name in KEPT_EXPERIMENTS:
        problems = (paper_shaped_run / "results" / name / "problems" / "dpo.jsonl").read_text()
        ids = [json.loads(line)["id"] for line in problems.splitlines()]
        subjects = Counter(i.split(":")[1].split("/")[0] for i in ids if i.startswith("math:"))
        assert set(subjects) == set(SUBJECTS), subjects
    internlm2 = paper_shaped_run / "results" / "internlm2_20b" / "problems" / "dpo.jsonl"
    assert '"id": "ape:' in internlm2.read_text()  # APE210K training questions too


@pytest.mark.slow
def test_step_controlled_pairs_keep_each_sources_limit(paper_shaped_run):
    config = yaml.safe_load((paper_shaped_run / "paper_shaped.yaml").read_text())
    for name, experiment in config["experiments"].items():
        limit = {s["tag"]: s["max_sc_pairs"] for s in experiment["data"]["dpo"]}
        pairs = paper_shaped_run / "results" / name / "pairs" / "scdpo"
        per_question = Counter(
            json.loads(line)["id"]
            for part in ("train.jsonl", "eval.jsonl")
            for line in (pairs / part).read_text().splitlines()
            if json.loads(line)["kind"] == "step_controlled"
        )
        assert per_question, name
        for question, count in per_question.items():
            assert count <= limit[question.split(":")[0]], (name, question, count)


@pytest.mark.slow
def test_the_login_node_fetched_what_the_compute_jobs_read_offline(paper_shaped_slurm):
    run, workdir = paper_shaped_slurm, paper_shaped_slurm.workdir
    assert run.returncode == 0, run.output[-8000:]
    assert "hub_fetch" in local_rules(run.output) and "hub_fetch" not in submitted_rules(run.output)
    cache = workdir / "resources" / "hub" / "hub"
    for name in KEPT_EXPERIMENTS:
        fetched = json.loads((workdir / "results" / name / "hub" / "fetched.json").read_text())
        ids = {(f["kind"], f["id"]) for f in fetched["fetched"]}
        assert {("dataset", "openai/gsm8k"), ("dataset", "EleutherAI/hendrycks_math")} <= ids
        assert all(Path(f["snapshot"]).is_relative_to(cache) for f in fetched["fetched"])
        log = (workdir / "logs" / "model_base" / f"{name}.log").read_text()
        # model_base ran as a compute job: the hub offline, unreachable, read from the cache
        assert "hub offline (HF_ENDPOINT=http://127.0.0.1:9)" in log, log
        assert f"from {cache}/models--" in log, log
    assert not (workdir / "openai").exists() and not (workdir / "mistralai").exists()
    gated = [authorised for _, path, authorised in run.hub_requests if GATED in path]
    assert gated and all(gated)  # the user's token, on the login node
    served = {path.split("/resolve/")[0] for _, path, _ in run.hub_requests if "/resolve/" in path}
    assert served == {
        "/mistralai/Mistral-7B-v0.1",
        "/internlm/internlm2-20b",
        "/datasets/openai/gsm8k",
        "/datasets/EleutherAI/hendrycks_math",
    }


@pytest.mark.slow
def test_internlm2_runs_converted_to_llama_with_native_code(paper_shaped_run, micro_sft):
    from transformers import AutoTokenizer

    log = (paper_shaped_run / "logs" / "model_base" / "internlm2_20b.log").read_text()
    assert "InternLM2 converted to LlamaForCausalLM" in log, log
    for model in ("base", *TRAINED):
        path = paper_shaped_run / "results" / "internlm2_20b" / "models" / model
        config = json.loads((path / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in config
        assert not list(path.glob("*.py")), model  # the stand-in's remote code fails if run
    # The converted tokenizer gives the trained tokenizer's ids (stand-in: trained id i + 3).
    converted = AutoTokenizer.from_pretrained(path)
    trained = AutoTokenizer.from_pretrained(micro_sft)
    problems = paper_shaped_run / "results" / "internlm2_20b" / "problems" / "sft.jsonl"
    for line in problems.read_text().splitlines()[:20]:
        text = json.loads(line)["question"]
        ids = converted(text, add_special_tokens=False).input_ids
        assert ids == [i + 3 for i in trained(text, add_special_tokens=False).input_ids], text


@pytest.mark.slow
def test_trained_models_keep_mistrals_bos_and_prompts_start_with_it(paper_shaped_run):
    from transformers import AutoTokenizer

    from scdpo.tokens import prompt_ids

    for name in KEPT_EXPERIMENTS:
        path = paper_shaped_run / "results" / name / "models" / "scdpo"
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        assert tokenizer.bos_token == "<s>"
        assert prompt_ids(tokenizer, "<|user|>question")[0] == tokenizer.bos_token_id
