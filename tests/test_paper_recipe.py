"""config/paper.yaml trains as the paper does: an effective batch of 64 for every training
(per-device batch x gradient accumulation x the SLURM profile's GPUs per node x `nodes`), each
node's launcher starting one process per GPU the profile gives it; InternLM2 runs converted,
without remote code; the released InternLM2 DPO data mix is a preset that passes the config
check (docs/differences.md)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from scdpo.config_check import check_config, local_paths

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
PAPER_BATCH = 64  # the paper: "a batch size of 64", every model
RULES = {"sft": "sft_train", "dpo": "dpo_train"}


def gpus_per_node(rule: str) -> int:
    """The GPUs the profile gives one node of a training job (gres "gpu:N" per node)."""
    resources = PROFILE["set-resources"][rule]
    gres = str(resources.get("gres", ""))
    return int(gres.split(":")[-1]) if gres.startswith("gpu") else int(resources.get("gpu", 1))


def trainings() -> list[tuple[str, str, dict]]:
    return [
        (name, stage, experiment[stage])
        for name, experiment in PAPER["experiments"].items()
        for stage in RULES
        if not experiment[stage].get("skip")
    ]


@pytest.mark.parametrize(
    "name,stage,recipe", trainings(), ids=[f"{n}-{s}" for n, s, _ in trainings()]
)
def test_every_training_has_the_papers_effective_batch(name, stage, recipe):
    batch = (
        recipe["batch_size"]
        * recipe["gradient_accumulation_steps"]
        * gpus_per_node(RULES[stage])
        * recipe.get("nodes", 1)
    )
    assert batch == PAPER_BATCH, f"{name} {stage}: {batch}"


def test_each_node_starts_one_training_process_per_gpu_of_the_profile():
    """One node's `accelerate launch` takes its process count from the launcher's config; a
    multi-node job multiplies the GPUs of its node (scdpo.train.launch)."""
    for name, stage, recipe in trainings():
        words = recipe["launcher"].split()
        config = yaml.safe_load((REPO / words[words.index("--config_file") + 1]).read_text())
        assert config["num_processes"] == gpus_per_node(RULES[stage]), (name, stage)


def test_internlm2_runs_converted_without_remote_code():
    internlm2 = PAPER["experiments"]["internlm2_20b"]
    assert not internlm2["model"].get("trust_remote_code")
    assert not any(internlm2[stage].get("trust_remote_code") for stage in RULES)
    assert internlm2["sft"]["nodes"] == internlm2["dpo"]["nodes"] == 4  # 16 GPUs, as the paper


def test_the_released_internlm2_data_mix_is_a_preset_that_passes_the_check(tmp_path):
    released = PAPER["_shared"]["dpo_questions_ape_released"]
    ape = [s for s in released if s.get("tag") == "ape"][0]
    assert ape["limit"] == int(200_488 * 0.25) and ape["max_sc_pairs"] == 1  # quarter APE, lim1
    config = copy.deepcopy(PAPER)
    internlm2 = config["experiments"]["internlm2_20b"]
    internlm2["data"]["dpo"] = released
    internlm2["sampling"] = {**internlm2["sampling"], "stop": "released_1_4"}
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for _, path, kind in local_paths(config):
            target = tmp_path / path
            if kind == "directory":
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        check_config(config, schema, files=["config/paper.yaml"])
    finally:
        os.chdir(cwd)
