# Params: exactly the config values that change a stage's result, each cut from the canonical
# config (rules/common.smk); then the content and code params, and the resources computed per job.
from scdpo.code_version import code_version
from scdpo.fingerprint import launcher_paths, local_content, model_paths, source_paths
from scdpo.names import seed_of
from scdpo.results.plan import GENERATION_RULES
from scdpo.train.reference import RECIPE_KEYS as REFERENCE_KEYS


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


# Recipe keys that reach a training job another way than its `recipe` param (config/schema.yaml).
OUTSIDE_RECIPE_PARAM = {
    key
    for key, spec in SCHEMA["$defs"]["recipe"]["properties"].items()
    if spec.get("x-not-in-recipe-param")
}


def recipe_json(stage):
    def recipe(wildcards):
        recipe = {
            k: v
            for k, v in exp_config(wildcards)[stage].items()
            if k not in OUTSIDE_RECIPE_PARAM
        }
        if "trained" in wildcards.keys():
            recipe["seed"] = seed_of(wildcards.trained, recipe["seed"])
        return json.dumps(recipe, sort_keys=True)

    return recipe


def launcher(stage):
    def launch(wildcards):
        return exp_config(wildcards)[stage].get("launcher", "python")

    return launch


def reference_recipe(wildcards):
    """The DPO recipe's keys that change reference log-probs (one file for every seed and rate)."""
    dpo = exp_config(wildcards)["dpo"]
    return json.dumps({k: dpo[k] for k in REFERENCE_KEYS if k in dpo}, sort_keys=True)


def solution_format(wildcards):
    return exp_config(wildcards)["format"]


def system_prompt(wildcards):
    return exp_config(wildcards)["system_prompt"]


def benchmark_generation(wildcards, benchmark):
    """Generation params on one benchmark, with its own tool-call limit where it has one."""
    params = generation_params(wildcards)
    max_calls = config["benchmarks"][benchmark].get("max_calls")
    if max_calls:
        params["generation"] = {**params["generation"], "max_calls": max_calls}
    return params


def eval_parts(wildcards):
    """An evaluation job's outputs, each with its params: {benchmark: params}, in the order of
    the experiment's benchmarks (benchmark_questions)."""
    return {
        benchmark: benchmark_generation(wildcards, benchmark)
        for benchmark in exp_config(wildcards)["benchmarks"]
    }


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


def paper_model(wildcards):
    """The paper's model family this experiment reproduces (for the data table), or None."""
    return exp_config(wildcards).get("paper_model")


def credit_params(wildcards):
    return {
        "beta": exp_config(wildcards)["dpo"]["beta"],
        "variants": experiment_variants(wildcards.exp),
        **config["report"]["credit"],
    }


def hub_sources(wildcards):
    """The experiment's hub models and datasets ({kind, id}): the fetch rule's param."""
    return hub.experiment_sources(config, wildcards.exp)


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


# --- resources computed per job ---------------------------------------------------------------------


def training_nodes(stage):
    """SLURM nodes of a training job (sbatch --nodes); the CLI starts one launcher per node."""

    def nodes(wildcards):
        return exp_config(wildcards)[stage]["nodes"]

    return nodes


def generation_gpus(wildcards):
    return experiment_gpus(wildcards.exp)


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
