"""The workflow parses, validates its config and plans every stage, before any job runs."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CONFIGS = sorted(
    str(p.relative_to(REPO)) for p in (REPO / "config").rglob("*.yaml") if p.name != "schema.yaml"
)
STAGES = [
    "problems_prepare",
    "benchmark_prepare",
    "sft_data",
    "model_base",
    "sft_train",
    "solutions_sample",
    "solutions_merge",
    "negatives_step_controlled",
    "negatives_merge",
    "pairs_build",
    "dpo_train",
    "eval_predict",
    "table_accuracy",
]


def dry_run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--directory", str(cwd), "--snakefile", str(REPO / "Snakefile"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    result.output = result.stdout
    return result


def create_local_paths(configfile: Path, workdir: Path) -> list[str]:
    """Empty stand-ins for the local files and directories a config names (config/paper.yaml's
    resources/ and ZeRO-3 config), which the parse requires; a dry-run reads none of them."""
    from scdpo.config_check import local_paths

    created = []
    for _, path, kind in local_paths(yaml.safe_load(configfile.read_text())):
        target = workdir / path
        if kind == "directory":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        created.append(path)
    return created


@pytest.fixture(scope="module")
def shipped_plan(tmp_path_factory):
    """The dry-run of a shipped config (its path from the checkout), once for this module, in a
    folder holding the local files it names."""
    plans: dict[str, subprocess.CompletedProcess] = {}

    def plan(configfile: str) -> subprocess.CompletedProcess:
        if configfile not in plans:
            workdir = tmp_path_factory.mktemp("plan")
            create_local_paths(REPO / configfile, workdir)
            plans[configfile] = dry_run("--configfile", str(REPO / configfile), cwd=workdir)
        return plans[configfile]

    return plan


@pytest.mark.parametrize("configfile", CONFIGS)
def test_every_shipped_config_dry_runs_every_stage(configfile, shipped_plan):
    result = shipped_plan(configfile)
    assert result.returncode == 0, result.output[-3000:]
    for stage in STAGES:
        assert f"rule {stage}:" in result.output or f"localrule {stage}:" in result.output, stage


def _edited_config(tmp_path, edit) -> subprocess.CompletedProcess:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return dry_run("--configfile", str(path), cwd=tmp_path)


def test_unknown_key_fails_before_any_job_naming_the_key(tmp_path):
    result = _edited_config(tmp_path, lambda c: c["experiments"]["tiny"]["dpo"].update(betta=0.2))
    assert result.returncode != 0
    assert "betta" in result.output
    assert "Job stats" not in result.output


def test_out_of_range_value_fails_naming_the_key(tmp_path):
    result = _edited_config(
        tmp_path, lambda c: c["experiments"]["tiny"]["sampling"].update(shards=0)
    )
    assert result.returncode != 0
    assert "shards" in result.output and "minimum" in result.output


def test_a_one_of_typo_names_the_key_and_branch_within_the_first_20_lines(tmp_path):
    def typo(config):
        config["experiments"]["tiny"]["data"]["sft"] = {"source": "jsonl", "pth": "sft.jsonl"}

    result = _edited_config(tmp_path, typo)
    assert result.returncode != 0
    head = "\n".join(result.output.splitlines()[:20])
    assert "bad.yaml" in head
    assert "experiments.tiny.data.sft.pth: unknown key; did you mean 'path'?" in head
    assert "oneOf best: source: jsonl" in head
    assert len(result.output.splitlines()) < 20  # no schema dump
    assert "Job stats" not in result.output


def test_numbers_written_1e_7_are_read_as_numbers(tmp_path):
    def paper_rate(config):
        config["experiments"]["tiny"]["dpo"]["learning_rate"] = "1e-7"  # as PyYAML reads 1e-7

    result = _edited_config(tmp_path, paper_rate)
    assert result.returncode == 0, result.output[-3000:]
    assert '"learning_rate": 1e-07' in result.output


def test_config_overrides_alone_are_merged_onto_the_default_config(tmp_path):
    """`--config k=v` without `--configfile`: the embedded default with that value changed."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config/config.yaml").read_text())
    override = "experiments=" + json.dumps({"tiny": {"sampling": {"shards": 3}}})
    result = dry_run("--config", override, cwd=tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    from workflow_run import planned_jobs

    planned = planned_jobs(result.output)
    assert planned["solutions_sample"] == 3 and planned["sft_train"] == 1


def test_a_missing_local_file_fails_the_parse_naming_the_key_and_path(tmp_path):
    def local(config):
        config["experiments"]["tiny"]["data"]["sft"] = {"source": "jsonl", "path": "my/sft.jsonl"}

    result = _edited_config(tmp_path, local)
    assert result.returncode != 0
    assert "my/sft.jsonl  (experiments.tiny.data.sft.path)" in result.output
    assert "Job stats" not in result.output


def test_the_paper_config_without_resources_fails_with_one_list_of_missing_paths(tmp_path):
    result = dry_run("--configfile", str(REPO / "config/paper.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    missing = create_local_paths(REPO / "config/paper.yaml", tmp_path / "elsewhere")
    message = result.output.split("ConfigError", 1)[1]
    assert f"{len(set(missing))} local path(s) named in the config" in message
    for path in missing:
        assert f"\n  {path}  (" in message, path
    assert "Job stats" not in result.output


def test_unknown_benchmark_name_is_reported(tmp_path):
    result = _edited_config(
        tmp_path, lambda c: c["experiments"]["tiny"].update(benchmarks=["gsm9k"])
    )
    assert result.returncode != 0
    assert "gsm9k" in result.output


def test_the_cost_table_reads_the_benchmark_file_of_every_planned_job(shipped_plan):
    """table_cost's inputs are exactly the benchmark: files of the jobs the run plans."""
    import re

    from workflow_run import planned_jobs

    result = shipped_plan("config/micro.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    job = result.stdout.split("rule table_cost:", 1)[1].split("output:", 1)[0]
    files = re.findall(r"logs/benchmarks/([a-z_]+)/\S+\.tsv", job)
    rules = "".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    with_benchmark = set(re.findall(r"^rule (\w+):\n(?:    .*\n|\n)*?    benchmark:", rules, re.M))
    assert set(files) == with_benchmark
    planned = planned_jobs(result.stdout)
    assert {rule: files.count(rule) for rule in set(files)} == {
        rule: planned[rule] for rule in with_benchmark
    }


def test_paper_config_plans_tables_1_and_2_with_one_gpu_count_per_generation_job(shipped_plan):
    """Every experiment of paper Tables 1 and 2; a generation job asks for as many GPUs as its
    vLLM engine's tensor-parallel size, the one place that number is set."""
    import re

    from workflow_run import planned_jobs

    result = shipped_plan("config/paper.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    experiments = {
        "mistral_7b_ours",
        "metamath_mistral_7b",
        "mathcoder_mistral_7b",
        "internlm2_20b",
    }
    # One evaluation job per model, reading every benchmark of its experiment.
    evaluations = re.findall(
        r"^rule eval_predict:\n\s+input: results/(\w+)/models/(\w+), (.*)$", result.stdout, re.M
    )
    assert {e for e, _, _ in evaluations} == experiments
    read = {
        m: set(re.findall(r"benchmarks/(\w+)\.jsonl", q))
        for e, m, q in evaluations
        if e == "internlm2_20b"
    }
    assert read["scdpo"] == {"gsm8k", "math", "ape210k", "cmath", "mgsm_zh"}
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for job in result.stdout.split("\n\n"):
        rule = re.search(r"^rule (\w+):", job, re.M)
        if not rule or rule[1] not in ("solutions_sample", "eval_predict", "pilot_predict"):
            continue
        exp = re.search(r"exp=(\w+)", job)[1]
        backend = config["experiments"][exp]["generation"]["backend"]
        assert f"gpu={backend['tensor_parallel_size']}," in job, job
    assert planned_jobs(result.stdout)["sft_train"] == 4


def test_internlm2_training_is_submitted_on_four_nodes_with_four_gpus_each(shipped_plan):
    """The sbatch line the SLURM plugin builds for InternLM2's SFT job: the rule's resources from
    a dry-run of config/paper.yaml, the profile's set-resources on top (docs/slurm.md)."""
    import re
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    result = shipped_plan("config/paper.yaml")
    assert result.returncode == 0, result.stdout[-3000:]
    (job,) = [
        j
        for j in result.stdout.split("\n\n")
        if re.search(r"^rule sft_train:", j, re.M) and "exp=internlm2_20b" in j
    ]
    planned = dict(re.findall(r"(\w+)=(\w+)", re.search(r"resources: (.*)", job)[1]))
    assert planned["nodes"] == "4"
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())

    class Resources(dict):
        __getattr__ = dict.__getitem__

    resources = Resources(
        {k: int(v) if v.isdigit() else v for k, v in planned.items()}
        | profile["set-resources"]["sft_train"]
    )
    job = SimpleNamespace(resources=resources, threads=profile["set-threads"]["sft_train"])
    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule_sft_train"}
    sbatch = get_submit_command(job, params | {"account": "", "partition": "", "workdir": "."})
    sbatch += set_gres_string(job)
    assert "--nodes=4" in sbatch and "--gres=gpu:4" in sbatch, sbatch
    assert "--gpus" not in sbatch and "--signal=URG@300" in sbatch, sbatch


def test_two_seeds_plan_one_dpo_training_and_evaluation_per_variant_and_seed(tmp_path):
    """The recipe's seed keeps the plain name, the other seed is '<variant>-seed<N>'; each
    training reads its variant's pairs, built once for all seeds, and is trained with its seed."""
    import re

    from workflow_run import planned_jobs

    tiny_variants = ["dpo", "dpo_data_equal", "scdpo", "step_dpo"]

    def seeded(config):
        tiny = config["experiments"]["tiny"]
        tiny["variants"] = tiny_variants
        tiny["dpo"]["seeds"] = [0, 7]

    result = _edited_config(tmp_path, seeded)
    assert result.returncode == 0, result.output[-3000:]
    planned = planned_jobs(result.output)
    assert (planned["pairs_build"], planned["dpo_train"], planned["eval_predict"]) == (4, 8, 9)
    trained = set()
    for job in result.output.split("\n\n"):
        if re.search(r"^rule dpo_train:", job, re.M):
            out = re.search(r"output: results/tiny/models/(\S+)", job)[1]
            seed = re.search(r'"seed": (\d+)', job)[1]
            variant = out.split("-seed")[0]
            assert seed == ("7" if out.endswith("-seed7") else "0"), job
            assert f"results/tiny/pairs/{variant}/train.jsonl" in job, job
            trained.add(out)
    assert trained == {f"{v}{s}" for v in tiny_variants for s in ("", "-seed7")}


# --- params: what changes results, nothing else (issue 31) ---------------------------------------


def _rule_blocks() -> dict[str, str]:
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M)[1:]:
            blocks[re.match(r"rule (\w+):", block)[1]] = block
    return blocks


def _section(block: str, key: str) -> str:
    match = re.search(rf"^    {key}:\n(.*?)(?=^    \S|\Z)", block, flags=re.M | re.S)
    return match[1] if match else ""


def test_every_rule_records_its_own_code_and_no_location_in_params():
    """Each rule that runs code has a `code` param naming its own script (the training CLI for
    the shell rules); no param is a path: an interpreter, the CLI's place, a resume file."""
    blocks = _rule_blocks()
    assert len(blocks) >= 19
    for name, block in blocks.items():
        params = _section(block, "params")
        script = re.search(r'^    script:\n\s+"\.\./workflow_scripts/(\w+\.py)"', block, re.M)
        shell = _section(block, "shell")
        if name == "all":
            assert not params and not script and not shell
            continue
        entry = script[1] if script else "train.py"
        assert script or "workflow_scripts/train.py" in shell, name
        assert f'code=code("{entry}")' in params, name
        assert (REPO / "workflow_scripts" / entry).is_file(), name
        literals = re.findall(r'"([^"]*)"', params.replace(f'code("{entry}")', ""))
        assert not [s for s in literals if "/" in s or s.endswith((".py", ".jsonl"))], name
        assert not re.search(r"PYTHON|TRAIN_CLI|resume|sys\.executable", params), name
    for name in ("sft_train", "dpo_train"):
        assert "{params.python}" not in blocks[name] and "${{SCDPO_PYTHON}}" in blocks[name]


LOCAL_TARGETS = [
    "results/tiny/problems/sft.jsonl",
    "results/tiny/problems/dpo.jsonl",
    "results/benchmarks/local.jsonl",
    "results/tiny/models/base",
    "results/tiny/models/sft",
]


def _local_inputs(workdir: Path) -> str:
    """The default config reading every kind of local input: a jsonl SFT file, a local dataset
    folder for DPO questions, a local benchmark file, a local model folder (named like a hub
    id), an accelerate config file; returns the config's path."""
    files = {
        "data/sft.jsonl": '{"question": "1+1?", "blocks": [], "extra": {"answer": "2"}}\n',
        "data/dpo_set/train.parquet": "rows",
        "data/bench.jsonl": '{"question": "2+2?", "extra": {"answer": "4"}}\n',
        "org/model/config.json": "{}",
        "org/model/model.safetensors": "weights",
        "data/accelerate.yaml": "num_processes: 2\n",
    }
    for name, text in files.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    tiny = config["experiments"]["tiny"]
    tiny["model"] = {"source": "hf", "name_or_path": "org/model"}
    tiny["data"] = {
        "sft": {"source": "jsonl", "path": "data/sft.jsonl"},
        "dpo": {"source": "hf", "id": "data/dpo_set", "split": "train"},
    }
    tiny["sft"]["launcher"] = "accelerate launch --config_file data/accelerate.yaml"
    config["benchmarks"]["local"] = {"source": "jsonl", "path": "data/bench.jsonl"}
    tiny["benchmarks"].append("local")
    (workdir / "local.yaml").write_text(yaml.safe_dump(config))
    return str(workdir / "local.yaml")


def test_each_local_input_reruns_exactly_its_readers_on_an_edit_not_on_new_times(tmp_path):
    """Planning only: the jobs reading local inputs (problems, benchmark, base model, SFT) are
    marked done with --touch --forceall on stand-in outputs, which records their params (a job
    without a record is no job to re-run); then new times plan nothing, and each edit adds
    exactly the jobs that read the edited input."""
    from workflow_run import planned_jobs

    configfile = _local_inputs(tmp_path)
    for target in LOCAL_TARGETS:
        path = tmp_path / target
        if target.endswith(".jsonl"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True)
    (tmp_path / "results/tiny/sft/data.jsonl").parent.mkdir(parents=True)
    (tmp_path / "results/tiny/sft/data.jsonl").write_text("{}\n")

    def run(*args: str) -> dict:
        result = dry_run(*LOCAL_TARGETS, *args, "--configfile", configfile, cwd=tmp_path)
        assert result.returncode == 0, result.output[-3000:]
        return planned_jobs(result.output)

    touched = subprocess.run(
        [*SNAKEMAKE, "--touch", "--forceall", "--cores", "1", "--directory", str(tmp_path)]
        + ["--snakefile", str(REPO / "Snakefile"), *LOCAL_TARGETS, "--configfile", configfile],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert touched.returncode == 0, touched.stdout[-3000:]
    assert run() == {}
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():  # new times; the benchmark also a new inode (cp, rsync without -t)
            os.utime(path, (path.stat().st_atime + 3600, path.stat().st_mtime + 3600))
    shutil.copyfile(tmp_path / "data/bench.jsonl", tmp_path / "copy.jsonl")
    os.replace(tmp_path / "copy.jsonl", tmp_path / "data/bench.jsonl")
    for path in (tmp_path / "org").rglob("*"):
        os.utime(path, (path.stat().st_atime + 3600, path.stat().st_mtime + 3600))
    assert run() == {}

    expected: dict[str, int] = {}
    edits = [
        ("data/accelerate.yaml", {"sft_train": 1}),
        ("data/bench.jsonl", {"benchmark_prepare": 1}),
        ("data/dpo_set/test.parquet", {"problems_prepare": 1}),  # a new file in the folder
        ("data/sft.jsonl", {"problems_prepare": 2, "sft_data": 1}),
        ("org/model/model.safetensors", {"model_base": 1}),
    ]
    for name, more in edits:
        with open(tmp_path / name, "a") as handle:
            handle.write("\n")
        expected.update(more)
        assert run() == expected, name
