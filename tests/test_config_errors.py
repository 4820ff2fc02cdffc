"""Config errors before any job runs: a few lines naming the config file, the key path and the fix
(inside a oneOf, the branch the block matches best), numbers PyYAML reads as strings, and local
files and directories that must exist (scdpo.config_check)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from fakes import SCHEMA

from scdpo.config_check import DEBUG_ENV, ConfigError, check_config, local_paths

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def error_of(edit, files=("my.yaml",), overrides=None) -> str:
    config = copy.deepcopy(DEFAULT)
    edit(config, config["experiments"]["tiny"])
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA, files=list(files), overrides=overrides)
    return str(caught.value)


# (what is edited, the key path the error must name, the union branch it must name)
ONE_OF_TYPOS = {
    "jsonl data source": (
        lambda c, t: t["data"].update(sft={"source": "jsonl", "pth": "x.jsonl"}),
        "experiments.tiny.data.sft.pth: unknown key; did you mean 'path'?",
        "source: jsonl",
    ),
    "hf source in a list": (
        lambda c, t: t["data"].update(
            dpo=[
                {"source": "synthetic", "n": 3, "seed": 1},
                {"source": "hf", "id": "openai/gsm8k", "splt": "train"},
            ]
        ),
        "experiments.tiny.data.dpo[1].splt: unknown key; did you mean 'split'?",
        "a list > source: hf",
    ),
    "benchmark source": (
        lambda c, t: c["benchmarks"]["synthetic_test"].update(sedd=3),
        "benchmarks.synthetic_test.sedd: unknown key; did you mean 'seed'?",
        "source: synthetic",
    ),
    "SFT recipe": (
        lambda c, t: t["sft"].update(epoch=3),
        "experiments.tiny.sft.epoch: unknown key; did you mean 'epochs'?",
        "recipe",
    ),
    "SFT skipped": (
        lambda c, t: t.update(sft={"skip": True, "learning_rate": 1}),
        "experiments.tiny.sft.learning_rate: unknown key; keys here: skip",
        "skip: true",
    ),
    "model": (
        lambda c, t: t["model"].update(hiden_size=64),
        "experiments.tiny.model.hiden_size: unknown key; did you mean 'hidden_size'?",
        "source: scratch",
    ),
    "model out of range": (
        lambda c, t: t["model"].update(num_layers=0),
        "experiments.tiny.model.num_layers: 0 is less than the minimum of 1 (Decoder layers.)",
        "source: scratch",
    ),
    "explicit schedule": (
        lambda c, t: t["step_control"].update(schedule={"start": 1.1, "step": 0.1, "capp": 1.4}),
        "experiments.tiny.step_control.schedule.capp: unknown key; did you mean 'cap'?",
        "{start, step, cap}",
    ),
    "schedule preset": (
        lambda c, t: t["step_control"].update(schedule="papr"),
        "experiments.tiny.step_control.schedule: 'papr' is not one of paper, released_code; "
        "did you mean 'paper'?",
        "one of paper, released_code",
    ),
    "sampling stop": (
        lambda c, t: t["sampling"].update(
            stop={"min_preferred": 1, "min_dispreferred": 4, "drop_near_duplicate": True}
        ),
        "experiments.tiny.sampling.stop.drop_near_duplicate: unknown key; "
        "did you mean 'drop_near_duplicates'?",
        "{min_preferred, min_dispreferred, drop_near_duplicates}",
    ),
}


@pytest.mark.parametrize("case", ONE_OF_TYPOS, ids=list(ONE_OF_TYPOS))
def test_a_one_of_typo_names_the_key_and_the_branch_it_matches_best(case):
    edit, key, branch = ONE_OF_TYPOS[case]
    lines = error_of(edit).splitlines()
    assert len(lines) <= 6, lines  # a few lines, no schema dump
    assert lines[0] == "invalid config (my.yaml); nothing has run:"
    assert lines[1] == f"  {key}", lines
    assert lines[2] == f"    (the block matches this branch of its oneOf best: {branch})"
    assert f"{DEBUG_ENV}=1" in lines[-1]


def test_an_unknown_source_kind_is_named_with_the_kinds_there_are():
    message = error_of(lambda c, t: t["data"].update(sft={"source": "jsnol", "path": "x"}))
    assert (
        "experiments.tiny.data.sft.source: 'jsnol' is not one of synthetic, jsonl, hf; "
        "did you mean 'jsonl'?" in message
    )


def test_plain_keys_name_their_path_and_what_they_take():
    message = error_of(lambda c, t: t["dpo"].update(betta=0.2))
    assert "experiments.tiny.dpo.betta: unknown key; did you mean 'beta'?" in message
    message = error_of(lambda c, t: t["sampling"].pop("round_size"))
    assert (
        "experiments.tiny.sampling.round_size: missing (Samples drawn per adaptive round.)"
        in message
    )
    message = error_of(lambda c, t: t["generation"]["backend"].update(engine="vlm"))
    assert "'vlm' is not one of vllm, transformers; did you mean 'vllm'?" in message


def test_the_schema_dump_comes_only_on_request(monkeypatch):
    def edit(c, t):
        t["model"]["hiden_size"] = 64

    short = error_of(edit)
    assert "Failed validating" not in short and "'description'" not in short
    monkeypatch.setenv(DEBUG_ENV, "1")
    full = error_of(edit)
    assert full.startswith(short.rsplit("\n", 1)[0])  # the same lines first
    assert "Failed validating 'oneOf'" in full and "'description'" in full


def test_numbers_written_as_1e_7_are_numbers():
    """PyYAML reads 1e-7 and 1e5 (no dot) as strings; the schema says where a number is meant."""
    text = (REPO / "config" / "config.yaml").read_text()
    text = re.sub(r"learning_rate: 2\.0e-5", "learning_rate: 1e-7", text)
    text = re.sub(r"max_samples: \d+", "max_samples: 1e2", text)
    config = yaml.safe_load(text)
    tiny = config["experiments"]["tiny"]
    assert (tiny["dpo"]["learning_rate"], tiny["sampling"]["max_samples"]) == ("1e-7", "1e2")
    config["report"] = {"pilot": {"temperatures": ["0", "5e-1"]}}
    check_config(config, SCHEMA)
    assert tiny["dpo"]["learning_rate"] == 1e-7
    assert tiny["sampling"]["max_samples"] == 100 and isinstance(
        tiny["sampling"]["max_samples"], int
    )
    assert config["report"]["pilot"]["temperatures"] == [0.0, 0.5]
    assert tiny["system_prompt"] == DEFAULT["experiments"]["tiny"]["system_prompt"]  # text stays


def test_a_number_that_is_no_whole_number_says_how_to_write_one():
    message = error_of(lambda c, t: t["sampling"].update(max_samples="1.5e0"))
    assert "experiments.tiny.sampling.max_samples: '1.5e0' is not an integer" in message
    assert "write a whole number" in message


def test_the_error_names_the_file_or_override_that_set_the_key(tmp_path):
    first, second = tmp_path / "base.yaml", tmp_path / "more.yaml"
    first.write_text(yaml.safe_dump(DEFAULT))
    more = {"experiments": {"tiny": {"dpo": {"betta": 0.1}}}}
    second.write_text(yaml.safe_dump(more))
    message = error_of(lambda c, t: t["dpo"].update(betta=0.1), files=[first, second])
    assert f"{second}: experiments.tiny.dpo.betta: unknown key" in message
    message = error_of(lambda c, t: t["dpo"].update(betta=0.1), files=[first], overrides=more)
    assert "--config: experiments.tiny.dpo.betta: unknown key" in message
    assert f"invalid config ({first}, --config)" in message


def _with_local_paths(c, t):
    t["model"] = {"source": "hf", "name_or_path": "models/base/weights"}  # no hub id
    t["data"]["sft"] = {"source": "jsonl", "path": "resources/sft/mine.jsonl"}
    t["data"]["dpo"] = [
        {"source": "hf", "id": "openai/gsm8k", "split": "train"},  # a hub id: not checked
        {"source": "hf", "id": "./data/math", "split": "train"},
    ]
    t["dpo"]["launcher"] = "accelerate launch --config_file envs/accelerate/mine.yaml"
    c["benchmarks"]["local"] = {"source": "jsonl", "path": "resources/sft/mine.jsonl"}
    t["benchmarks"] = ["synthetic_test", "local"]


def test_missing_local_files_and_directories_are_listed_in_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = error_of(_with_local_paths).splitlines()
    assert lines[0].startswith("4 local path(s) named in the config (my.yaml) do not exist")
    assert lines[1:5] == [
        "  models/base/weights  (experiments.tiny.model.name_or_path)",
        "  resources/sft/mine.jsonl  (experiments.tiny.data.sft.path and 1 more)",
        "  ./data/math  (experiments.tiny.data.dpo[1].id)",
        "  envs/accelerate/mine.yaml  (experiments.tiny.dpo.launcher)",
    ]
    assert "Files under resources/" in lines[5]


def test_existing_local_paths_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(DEFAULT)
    _with_local_paths(config, config["experiments"]["tiny"])
    for _, path, kind in local_paths(config):
        if kind == "directory":
            (tmp_path / path).mkdir(parents=True, exist_ok=True)
        else:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text("")
    check_config(config, SCHEMA)
    (tmp_path / "data" / "math").rmdir()
    (tmp_path / "data" / "math").write_text("")  # a file where a directory is meant
    with pytest.raises(ConfigError, match=r"\./data/math  \(experiments\.tiny\.data\.dpo\[1\]\.id"):
        check_config(config, SCHEMA)


@pytest.mark.parametrize(
    "path", sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml"), ids=str
)
def test_shipped_configs_pass_the_schema(path):
    config = yaml.safe_load(path.read_text())
    try:
        check_config(config, SCHEMA)
    except ConfigError as error:  # the paper config's resources/ are not in the checkout
        assert str(error).split("\n", 1)[0].endswith("nothing has run:")
        assert "local path(s)" in str(error), error


def test_names_that_must_be_other_keys_are_checked_with_their_key_path():
    def edit(c, t):
        t["benchmarks"] = [*t["benchmarks"], "gsm8k_tset"]
        t["sft"]["seeds"] = [1, 2]
        c.setdefault("report", {})["pilot"] = {"experiments": ["tinny"], "benchmarks": ["x"]}

    text = error_of(edit)
    position = len(DEFAULT["experiments"]["tiny"]["benchmarks"])
    assert (
        f"experiments.tiny.benchmarks[{position}]: 'gsm8k_tset' is not a key of the top-level "
        "'benchmarks'" in text
    )
    assert "experiments.tiny.sft.seeds: seeds repeat DPO trainings only (dpo.seeds)" in text
    assert (
        "report.pilot.experiments[0]: 'tinny' is not a key of the top-level 'experiments'" in text
    )
    assert "report.pilot.benchmarks[0]: 'x' is not a key of the top-level 'benchmarks'" in text


def test_a_trainer_args_typo_fails_at_parse_time_where_trl_imports():
    config = copy.deepcopy(DEFAULT)
    config["experiments"]["tiny"]["dpo"]["trainer_args"] = {"weight_decy": 0.1, "optim": "sgd"}
    check_config(copy.deepcopy(config), SCHEMA)  # not asked for (a SLURM job's own parse)
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA, trainer_args=True)
    text = str(caught.value)
    assert "experiments.tiny.dpo.trainer_args.weight_decy: not an argument of trl.DPOConfig" in text
    assert "did you mean 'weight_decay'?" in text and "optim" not in text
