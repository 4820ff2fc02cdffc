import json
import os
import sys
from pathlib import Path

import yaml

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless the command line names config files (`--configfile`): merging the
# two would add the default's experiments to every real run. `--config k=v` alone is merged onto
# the default (Snakemake applies the command line's values after the file's).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# The package's light modules (names, config) are imported from this checkout, whatever env runs
# Snakemake.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from scdpo.code_version import code_version
from scdpo.config import canonical, fill_defaults
from scdpo.config_check import check_config
from scdpo.cpu import job_environment
from scdpo.train.reference import RECIPE_KEYS as REFERENCE_KEYS
from scdpo.fingerprint import launcher_paths, local_content, model_paths, source_paths
from scdpo.results.plan import GENERATION_RULES
from scdpo.names import (
    SEED_MARK,
    VARIANTS,
    seed_of,
    temperature_name,
    trained_name,
    variant_of,
)

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

EXPERIMENTS = list(config["experiments"])


# --- the Hugging Face hub: fetched on the login node, read offline by compute jobs ---------------
# (scdpo.hub; the rule hub_fetch is in rules/fetch.smk.) Every job reads models and datasets from
# one cache (HF_HUB_CACHE, HF_DATASETS_CACHE: $SCDPO_HUB_CACHE, else the user's HF_HUB_CACHE or
# HF_HOME, else resources/hub). The local rule hub_fetch fills it for each experiment that names
# hub ids; a compute job's own Snakemake (on a SLURM node it parses this file again) switches the
# hub off (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1), and model_base reads only the cache anyway.
# The embedded default names no hub id: no fetch job.
from scdpo import hub

os.environ.update(hub.cache_environment(os.environ))
if not workflow.is_main_process:
    os.environ.update(hub.offline_environment())

HUB_FETCHED = hub.marker("{exp}")


def hub_sources(wildcards):
    """The experiment's hub models and datasets ({kind, id}): the fetch rule's param."""
    return hub.experiment_sources(config, wildcards.exp)


def hub_fetched(wildcards):
    """model_base waits for its experiment's fetch; ancient: a re-fetch (a benchmark added)
    re-runs nothing downstream. Hub ids are tracked by name, as before."""
    if not hub_sources(wildcards):
        return {}
    return {"hub": ancient(hub.marker(wildcards.exp))}


def model_base_mem_mb(wildcards):
    """Memory of model_base, from the model's size in its dtype (the cached or local folder's
    weights, else the parameter count in its name): 1.5 x the weights (a converted InternLM2
    shard and the resized embeddings beside the model) + 8 GB; 32 GB when unknown."""
    spec = model_spec(wildcards)
    if spec["source"] == "scratch":
        return 4000
    size = hub.model_bytes(spec["name_or_path"], spec["dtype"])
    return 32000 if size is None else int(1.5 * size / 1e6) + 8000


def model_base_runtime(wildcards):
    """Minutes: an hour, or 3 minutes per GB of weights (read, converted, written) if longer."""
    spec = model_spec(wildcards)
    size = (
        None if spec["source"] == "scratch" else hub.model_bytes(spec["name_or_path"])
    )
    return max(60, int(3 * (size or 0) / 1e9))


# --- end of the hub block --------------------------------------------------------------------------


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


for _exp, _spec in config["experiments"].items():
    for _name in _spec["benchmarks"]:
        if _name not in config["benchmarks"]:
            raise ValueError(
                f"experiments.{_exp}.benchmarks: '{_name}' is not a key of the top-level 'benchmarks'"
            )
    if "seeds" in _spec["sft"]:
        raise ValueError(
            f"experiments.{_exp}.sft.seeds: seeds repeat DPO trainings only (dpo.seeds)"
        )


def exp_config(wildcards):
    return config["experiments"][wildcards.exp]


def experiment_variants(exp):
    """The experiment's DPO variants, in table order."""
    chosen = config["experiments"][exp]["variants"]
    return [variant for variant in VARIANTS if variant in chosen]


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


# --- params: exactly the config values that change a stage's result --------------------------------


def problem_source(wildcards):
    return exp_config(wildcards)["data"][wildcards.subset]


def benchmark_source(wildcards):
    return config["benchmarks"][wildcards.benchmark]


def generation_params(wildcards, stage=None):
    """What every generation job depends on, plus its stage's own block."""
    spec = exp_config(wildcards)
    params = {
        key: spec[key]
        for key in ("format", "system_prompt", "seed", "generation", "sandbox", "noise")
    }
    if stage:
        params[stage] = {k: v for k, v in spec[stage].items() if k != "shards"}
    return params


def sampling_params(wildcards):
    return generation_params(wildcards, "sampling")


def step_control_params(wildcards):
    return generation_params(wildcards, "step_control")


def pairs_params(wildcards):
    spec = exp_config(wildcards)
    return {
        "system_prompt": spec["system_prompt"],
        "seed": spec["seed"],
        "pairs": spec["pairs"],
        "dpo": {"max_length": spec["dpo"]["max_length"]},
    }


def recipe_json(stage):
    def recipe(wildcards):
        # The launcher is its own param (it re-runs the training too: more processes, another
        # effective batch). `nodes` is a resource, as the profile's GPUs per node are: changing
        # it does not re-run a finished training. `seeds` is the list of trainings; each has its
        # own `seed`, so adding a seed changes no finished training's params. The checkpoint
        # block stays in: the CLI reads it.
        recipe = {
            k: v
            for k, v in exp_config(wildcards)[stage].items()
            if k not in ("launcher", "nodes", "seeds")
        }
        if "trained" in wildcards.keys():
            recipe["seed"] = seed_of(wildcards.trained, recipe["seed"])
        return json.dumps(recipe, sort_keys=True)

    return recipe


def launcher(stage):
    def launch(wildcards):
        return exp_config(wildcards)[stage].get("launcher", "python")

    return launch


# --- content and code: what a path or a script does not say ----------------------------------------
# A local file or folder the config names (a jsonl source, a local dataset or model directory, a
# launcher's --config_file) is no declared input: its consumers carry its content's sha256 in a
# `content` param beside the block that names it (scdpo.fingerprint; hashed once, then cached by
# stat in .snakemake/scdpo/): an edit re-runs them, a copy or touch with new times does not.
# Hub ids that are no local directory are tracked by name. Every rule's `code` param is the version
# of the package code its script runs (scdpo.code_version); Snakemake's own code trigger sees the
# script (mtime) and the shell command as written.


def problem_content(wildcards):
    source = problem_source(wildcards)
    sources = source if isinstance(source, list) else [source]
    return local_content([path for each in sources for path in source_paths(each)])


def benchmark_content(wildcards):
    return local_content(source_paths(benchmark_source(wildcards)))


def model_content(wildcards):
    return local_content(model_paths(model_spec(wildcards)))


def launcher_content(stage):
    """Fingerprint of the file the launcher reads (`--config_file`), beside the launcher."""

    def content(wildcards):
        return local_content(launcher_paths(launcher(stage)(wildcards)))

    return content


_CODE_VERSIONS = {}


def code(script):
    """The `code` param of a rule running workflow_scripts/<script> (the training CLI, train.py,
    for the shell rules): a hash of the script and the package modules it imports."""

    def version(wildcards):
        if script not in _CODE_VERSIONS:
            _CODE_VERSIONS[script] = code_version(
                os.path.join(workflow.basedir, "workflow_scripts", script),
                os.path.join(workflow.basedir, "src"),
            )
        return _CODE_VERSIONS[script]

    return version


def training_nodes(stage):
    """SLURM nodes of a training job (sbatch --nodes); the CLI starts one launcher per node."""

    def nodes(wildcards):
        return exp_config(wildcards)[stage]["nodes"]

    return nodes


# --- inputs -----------------------------------------------------------------------------------------


def base_model_inputs(wildcards):
    """A scratch model's tokenizer is trained on the SFT data; a real model needs nothing local."""
    if exp_config(wildcards)["model"]["source"] == "scratch":
        return {"corpus": f"results/{wildcards.exp}/sft/data.jsonl"}
    return {}


def sft_model(wildcards):
    """The SFT model; with `sft: {skip: true}` the base model already is one (e.g. MetaMath)."""
    if exp_config(wildcards)["sft"].get("skip", False):
        return f"results/{wildcards.exp}/models/base"
    return f"results/{wildcards.exp}/models/sft"


def model_dir(wildcards):
    if wildcards.model == "sft":
        return sft_model(wildcards)
    return f"results/{wildcards.exp}/models/{wildcards.model}"


def shard_names(exp, stage):
    shards = config["experiments"][exp][stage]["shards"]
    return [f"shard{i}-of{shards}" for i in range(shards)]


def shard_files(stage):
    def files(wildcards):
        return [
            f"results/{wildcards.exp}/{stage}/{shard}.jsonl"
            for shard in shard_names(wildcards.exp, stage)
        ]

    return files


def all_predictions(wildcards=None):
    """Every evaluated model's predictions folder (one file per benchmark of its experiment)."""
    return [
        f"results/{exp}/predictions/{model}"
        for exp in EXPERIMENTS
        for model in experiment_models(exp)
    ]


def prediction_keys(wildcards=None):
    """What each folder of all_predictions holds: [experiment, model, [benchmarks]]."""
    return [
        [exp, model, config["experiments"][exp]["benchmarks"]]
        for exp in EXPERIMENTS
        for model in experiment_models(exp)
    ]


def variant_pairs(exp, variant):
    pairs = f"results/{exp}/pairs/{variant}"
    return {"train": f"{pairs}/train.jsonl", "eval": f"{pairs}/eval.jsonl"}


def trained_pairs(wildcards):
    """The pair set a DPO training learns from (its variant's, whatever its seed) and, with
    `dpo.reference: precomputed`, the SFT model's log-probs of those pairs (else no file).
    """
    variant = variant_of(wildcards.trained)
    reference = []
    if exp_config(wildcards)["dpo"]["reference"] == "precomputed":
        reference = f"results/{wildcards.exp}/pairs/{variant}/reference_logps.jsonl"
    return {**variant_pairs(wildcards.exp, variant), "reference": reference}


def reference_pairs(wildcards):
    return variant_pairs(wildcards.exp, wildcards.variant)


def reference_recipe(wildcards):
    """The DPO recipe's keys that change reference log-probs (one file for every seed and rate)."""
    dpo = exp_config(wildcards)["dpo"]
    return json.dumps({k: dpo[k] for k in REFERENCE_KEYS if k in dpo}, sort_keys=True)


def pairs_inputs(wildcards):
    """Plain DPO needs only the naive samples; the other variants also the SC negatives."""
    inputs = {
        "samples": f"results/{wildcards.exp}/sampling/samples.jsonl",
        "model": sft_model(wildcards),
    }
    if wildcards.variant != "dpo":
        inputs["negatives"] = f"results/{wildcards.exp}/step_control/negatives.jsonl"
    return inputs


def solution_format(wildcards):
    return exp_config(wildcards)["format"]


def system_prompt(wildcards):
    return exp_config(wildcards)["system_prompt"]


def model_spec(wildcards):
    return exp_config(wildcards)["model"]


def benchmark_generation(wildcards, benchmark):
    """Generation params on one benchmark, with its own tool-call limit where it has one."""
    params = generation_params(wildcards)
    max_calls = config["benchmarks"][benchmark].get("max_calls")
    if max_calls:
        params["generation"] = {**params["generation"], "max_calls": max_calls}
    return params


def benchmark_questions(wildcards):
    return [
        f"results/benchmarks/{benchmark}.jsonl"
        for benchmark in exp_config(wildcards)["benchmarks"]
    ]


def eval_parts(wildcards):
    """An evaluation job's outputs, each with its params: {benchmark: params}, in the order of
    the experiment's benchmarks (benchmark_questions)."""
    return {
        benchmark: benchmark_generation(wildcards, benchmark)
        for benchmark in exp_config(wildcards)["benchmarks"]
    }


# --- report -----------------------------------------------------------------------------------------
# config["report"] carries the schema's defaults (validate fills them), so every key is present.

PILOT = config["report"]["pilot"]

for _name in PILOT.get("experiments", []):
    if _name not in config["experiments"]:
        raise ValueError(f"report.pilot.experiments: '{_name}' is not an experiment")
for _name in PILOT.get("benchmarks", []):
    if _name not in config["benchmarks"]:
        raise ValueError(
            f"report.pilot.benchmarks: '{_name}' is not a key of 'benchmarks'"
        )


def pilot_experiments():
    return PILOT.get("experiments", EXPERIMENTS)


def pilot_benchmarks(exp):
    """The configured pilot benchmarks, else the experiment's first benchmark."""
    return PILOT.get("benchmarks") or config["experiments"][exp]["benchmarks"][:1]


def pilot_temperatures():
    return [temperature_name(t) for t in PILOT["temperatures"]]


def pilot_predictions(wildcards):
    """The experiment's pilot folders, one per benchmark (a file per temperature)."""
    return [
        f"results/{wildcards.exp}/pilot/{benchmark}"
        for benchmark in pilot_benchmarks(wildcards.exp)
    ]


def pilot_keys(wildcards):
    """What each folder of pilot_predictions holds: [benchmark, [temperature names]]."""
    return [
        [benchmark, pilot_temperatures()]
        for benchmark in pilot_benchmarks(wildcards.exp)
    ]


def pilot_parts(wildcards):
    """A pilot job's outputs: {t<temperature>: evaluation's params at that temperature}."""
    params = benchmark_generation(wildcards, wildcards.benchmark)
    return {
        f"t{name}": {**params, "temperature": float(name)}
        for name in pilot_temperatures()
    }


def statistics_params(wildcards=None):
    return {
        "confidence": config["report"]["confidence"],
        "n_boot": config["report"]["bootstrap_samples"],
        "seed": config["report"]["seed"],
    }


def power_params(wildcards=None):
    """Table 1's power computation ({difference, discordant, alpha}), or None."""
    return config["report"].get("power")


def all_pair_files(wildcards=None):
    return [
        f"results/{exp}/pairs/{variant}/{split}.jsonl"
        for exp in EXPERIMENTS
        for variant in experiment_variants(exp)
        for split in ("train", "eval")
    ]


def experiment_pair_files(wildcards):
    return [
        f"results/{wildcards.exp}/pairs/{variant}/{split}.jsonl"
        for variant in experiment_variants(wildcards.exp)
        for split in ("train", "eval")
    ]


def paper_model(wildcards):
    """The paper's model family this experiment reproduces (for the data table), or None."""
    return exp_config(wildcards).get("paper_model")


def credit_models(wildcards):
    """The SFT reference and each variant's model (trained with the recipe's seed)."""
    models = {"reference": sft_model(wildcards)}
    for variant in experiment_variants(wildcards.exp):
        models[variant] = f"results/{wildcards.exp}/models/{variant}"
    return models


def credit_params(wildcards):
    return {
        "beta": exp_config(wildcards)["dpo"]["beta"],
        "variants": experiment_variants(wildcards.exp),
        **config["report"]["credit"],
    }


def experiment_gpus(exp):
    """GPUs of one generation job: vLLM's tensor-parallel size (the only place it is set), none
    for the transformers engine on CPU."""
    backend = config["experiments"][exp]["generation"]["backend"]
    if backend["engine"] == "vllm":
        return backend["tensor_parallel_size"]
    return 1 if backend["device"] == "cuda" else 0


def generation_gpus(wildcards):
    return experiment_gpus(wildcards.exp)


def rule_gpus(wildcards=None):
    """GPUs per job of each rule (its gpu resource after the profile's set-resources), in
    workflow order, so the cost table can turn wall hours into GPU-hours; generation rules per
    experiment, as "<rule>/<experiment>"."""
    gpus = {}
    for each in workflow.rules:
        resource = each.resources.get("gpu")
        # A resource given as a function of the job has no value here; count it as 0.
        value = None if resource.is_evaluable() else resource.value
        gpus[each.name] = value if isinstance(value, (int, float)) else 0
    for name in GENERATION_RULES:
        for exp in EXPERIMENTS:
            gpus[f"{name}/{exp}"] = experiment_gpus(exp)
    return gpus


def report_outputs(wildcards=None):
    """Everything the report shows but the cost table."""
    outputs = [
        "results/tables/accuracy_ci.html",
        *[f"results/{exp}/report/pilot.png" for exp in pilot_experiments()],
    ]
    for exp in EXPERIMENTS:
        outputs += [
            f"results/{exp}/report/data_stats.html",
            f"results/{exp}/report/localisation.html",
            f"results/{exp}/report/credit",
            f"results/{exp}/report/curves.png",
        ]
    return outputs


def trainings(wildcards):
    """Every trained model of an experiment, SFT first (a skipped SFT has no curves)."""
    skipped = exp_config(wildcards)["sft"].get("skip", False)
    names = ([] if skipped else ["sft"]) + trained_models(wildcards.exp)
    return [f"results/{wildcards.exp}/models/{name}" for name in names]


def training_names(wildcards):
    """What each folder of `trainings` is, in its order."""
    return [Path(folder).name for folder in trainings(wildcards)]


def all_benchmark_files(wildcards=None):
    """The benchmark: file of every job of the run (tested to cover each rule that has one)."""
    files = []
    for exp, spec in config["experiments"].items():
        jobs = {
            "model_base": [exp],
            "sft_train": [] if spec["sft"].get("skip", False) else [exp],
            "solutions_sample": [f"{exp}/{s}" for s in shard_names(exp, "sampling")],
            "negatives_step_controlled": [
                f"{exp}/{s}" for s in shard_names(exp, "step_control")
            ],
            "dpo_train": [f"{exp}/{model}" for model in trained_models(exp)],
            "reference_logps": (
                [f"{exp}/{variant}" for variant in experiment_variants(exp)]
                if spec["dpo"]["reference"] == "precomputed"
                else []
            ),
            "eval_predict": [f"{exp}/{model}" for model in experiment_models(exp)],
            "pilot_predict": (
                [f"{exp}/{benchmark}" for benchmark in pilot_benchmarks(exp)]
                if exp in pilot_experiments()
                else []
            ),
            "credit_assign": [exp],
        }
        files += [
            f"logs/benchmarks/{rule}/{job}.tsv"
            for rule, names in jobs.items()
            for job in names
        ]
    return files
