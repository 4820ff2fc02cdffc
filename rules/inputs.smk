# Input functions: the files a job reads, by experiment and wildcards.
from scdpo.names import variant_of


def hub_fetched(wildcards):
    """model_base waits for its experiment's fetch; ancient: a re-fetch (a benchmark added)
    re-runs nothing downstream. Hub ids are tracked by name, as before."""
    if not hub_sources(wildcards):
        return {}
    return {"hub": ancient(hub.marker(wildcards.exp))}


def base_model_inputs(wildcards):
    """A scratch model's tokenizer is trained on the SFT data; a real model needs nothing local."""
    if exp_config(wildcards)["model"]["source"] == "scratch":
        return {"corpus": f"results/{wildcards.exp}/sft/data.jsonl"}
    return {}


def sft_model(wildcards):
    """The SFT model; with `sft: {skip: true}` the base model already is one (e.g. MetaMath)."""
    if sft_skipped(wildcards.exp):
        return f"results/{wildcards.exp}/models/base"
    return f"results/{wildcards.exp}/models/sft"


def model_dir(wildcards):
    if wildcards.model == "sft":
        return sft_model(wildcards)
    return f"results/{wildcards.exp}/models/{wildcards.model}"


def shard_files(stage):
    def files(wildcards):
        return [
            f"results/{wildcards.exp}/{stage}/{shard}.jsonl"
            for shard in shard_names(wildcards.exp, stage)
        ]

    return files


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


def pairs_inputs(wildcards):
    """Plain DPO needs only the naive samples; the other variants also the SC negatives."""
    inputs = {
        "samples": f"results/{wildcards.exp}/sampling/samples.jsonl",
        "model": sft_model(wildcards),
    }
    if wildcards.variant != "dpo":
        inputs["negatives"] = f"results/{wildcards.exp}/step_control/negatives.jsonl"
    return inputs


def benchmark_questions(wildcards):
    return [
        f"results/benchmarks/{benchmark}.jsonl"
        for benchmark in exp_config(wildcards)["benchmarks"]
    ]


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


def credit_models(wildcards):
    """The SFT reference and each variant's model (trained with the recipe's seed)."""
    models = {"reference": sft_model(wildcards)}
    for variant in experiment_variants(wildcards.exp):
        models[variant] = f"results/{wildcards.exp}/models/{variant}"
    return models


def trainings(wildcards):
    """Every trained model of an experiment, SFT first (a skipped SFT has no curves)."""
    names = ([] if sft_skipped(wildcards.exp) else ["sft"]) + trained_models(
        wildcards.exp
    )
    return [f"results/{wildcards.exp}/models/{name}" for name in names]


def training_names(wildcards):
    """What each folder of `trainings` is, in its order."""
    return [Path(folder).name for folder in trainings(wildcards)]
