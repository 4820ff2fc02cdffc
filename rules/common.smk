# Configuration: the config checked and filled from config/schema.yaml, the jobs' environment,
# the wildcards, and what an experiment holds. Params are in rules/params.smk, input functions in
# rules/inputs.smk, the run's targets in rules/targets.smk.
import json
import os
import sys
from pathlib import Path

import yaml

from snakemake.settings.types import DeploymentMethod

# The package's light modules (names, config) are imported from this checkout, whatever env runs
# Snakemake.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from scdpo import hub
from scdpo.config import canonical, fill_defaults
from scdpo.config_check import check_config
from scdpo.cpu import job_environment
from scdpo.names import SEED_MARK, VARIANTS, temperature_name, trained_name

# libyaml's loader where PyYAML has it: every SLURM job starts Snakemake twice, and this schema
# is the largest file it parses.
with open(os.path.join(workflow.basedir, "config", "schema.yaml")) as _schema:
    SCHEMA = yaml.load(_schema, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
# Before any job: the schema (errors name the config file, the key path and the fix, no schema
# dump; SCDPO_CONFIG_DEBUG=1 adds it), numbers PyYAML reads as strings (1e-7) read as numbers, and
# every local file or directory the config names exists (scdpo.config_check).
check_config(
    config,
    SCHEMA,
    files=[str(f) for f in workflow.configfiles],
    overrides=dict(workflow.config_settings.config),
    # TRL's argument names once, where Snakemake starts; not again in each SLURM job's parse.
    trainer_args=workflow.is_main_process,
)
# Defaults filled from the schema, per union branch (Snakemake's own filling would leak a jsonl
# source's defaults into a synthetic one).
fill_defaults(config, SCHEMA)
# Every param below is cut from this config: written one way, equal values give equal params.
config.update(canonical(config))

# One CPU kernel path for every job, so that every x86-64 machine computes the same numbers, and
# OpenMP threads that sleep instead of spinning on shared cores (scdpo.cpu; jobs inherit this
# environment, and a SLURM job sets it again when its Snakemake parses this file).
os.environ.update(job_environment(os.environ))


# The interpreter of the training CLI (the shell rules): with conda, the rule's env's `python`
# (first on its PATH); without, the interpreter running Snakemake (the project's .venv), not
# whichever `python` the user's PATH finds first. The shell commands read it, and this workflow's
# folder (the CLI is workflow_scripts/train.py there), from the environment every job inherits, as
# ${SCDPO_PYTHON} and ${SCDPO_WORKFLOW}: locations, so no params (another entry point, such as
# .venv/bin/python3 for .venv/bin/python, or a moved checkout must re-run nothing), and Snakemake's
# code trigger compares the command as written, without their values. A SLURM job sets them again
# when its Snakemake parses this file.
os.environ.update(
    SCDPO_PYTHON=(
        "python"
        if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
        else sys.executable
    ),
    SCDPO_WORKFLOW=os.path.join(os.path.relpath(workflow.basedir), ""),
)

# Scheduling only (no output changes): the jobs from the SFT model to the DPO models are a run's
# longest chain, so they go before the jobs beside it (evaluation of the SFT model, the
# temperature pilot, the report), which fill the cores the chain leaves idle.
LONGEST_CHAIN = 10

EXPERIMENTS = list(config["experiments"])


# The Hugging Face hub (scdpo.hub): every job reads models and datasets from one cache
# (HF_HUB_CACHE, HF_DATASETS_CACHE: $SCDPO_HUB_CACHE, else the user's HF_HUB_CACHE or HF_HOME, else
# resources/hub), which the local rule hub_fetch (rules/fetch.smk) fills on the login node for
# each experiment that names hub ids. A compute job's own Snakemake (on a SLURM node it parses this
# file again) switches the hub off, and model_base reads only the cache anyway.
os.environ.update(hub.cache_environment(os.environ))
if not workflow.is_main_process:
    os.environ.update(hub.offline_environment())


# A DPO-trained model is a variant, with "-seed<N>" when trained with another seed than the
# recipe's (scdpo.names.trained_name); an evaluated model is one of those or the SFT model.
TRAINED = f"(?:{'|'.join(VARIANTS)})(?:{SEED_MARK}\\d+)?"


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    variant="|".join(VARIANTS),
    trained=TRAINED,
    model=f"sft|{TRAINED}",
    benchmark="|".join(config["benchmarks"]),
    subset="sft|dpo",
    shard=r"\d+",
    shards=r"\d+",


def exp_config(wildcards):
    return config["experiments"][wildcards.exp]


def model_spec(wildcards):
    return exp_config(wildcards)["model"]


def experiment_variants(exp):
    """The experiment's DPO variants, in table order."""
    chosen = config["experiments"][exp]["variants"]
    return [variant for variant in VARIANTS if variant in chosen]


def sft_skipped(exp):
    """`sft: {skip: true}`: the base model already is the SFT model (e.g. MetaMath)."""
    return config["experiments"][exp]["sft"].get("skip", False)


def dpo_seeds(exp):
    recipe = config["experiments"][exp]["dpo"]
    return recipe.get("seeds", [recipe["seed"]])


def trained_models(exp):
    """Every DPO training of an experiment: one per variant and seed."""
    recipe_seed = config["experiments"][exp]["dpo"]["seed"]
    return [
        trained_name(variant, seed, recipe_seed)
        for variant in experiment_variants(exp)
        for seed in dpo_seeds(exp)
    ]


def experiment_models(exp):
    """Every evaluated model of an experiment: SFT, then each DPO training."""
    return ["sft", *trained_models(exp)]


def shard_names(exp, stage):
    shards = config["experiments"][exp][stage]["shards"]
    return [f"shard{i}-of{shards}" for i in range(shards)]


def experiment_gpus(exp):
    """GPUs of one generation job: vLLM's tensor-parallel size (the only place it is set), none
    for the transformers engine on CPU."""
    backend = config["experiments"][exp]["generation"]["backend"]
    if backend["engine"] == "vllm":
        return backend["tensor_parallel_size"]
    return 1 if backend["device"] == "cuda" else 0


# --- the report's pilot -------------------------------------------------------------------------

PILOT = config["report"]["pilot"]


def pilot_experiments():
    return PILOT.get("experiments", EXPERIMENTS)


def pilot_benchmarks(exp):
    """The configured pilot benchmarks, else the experiment's first benchmark."""
    return PILOT.get("benchmarks") or config["experiments"][exp]["benchmarks"][:1]


def pilot_temperatures():
    return [temperature_name(t) for t in PILOT["temperatures"]]
