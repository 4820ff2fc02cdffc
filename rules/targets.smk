# The run's aggregated files: every model's predictions, every pair file, every job's benchmark
# file, the report's outputs. A list an aggregating rule reads comes with the keys of what each of
# its files holds (a param in the same order), so that no script decodes a path.


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


def pair_files(experiments):
    """Every pair file (train, eval) of the experiments' variants: [(path, [exp, variant])]."""
    return [
        (path, [exp, variant])
        for exp in experiments
        for variant in experiment_variants(exp)
        for path in variant_pairs(exp, variant).values()
    ]


def all_pair_files(wildcards=None):
    return [path for path, _ in pair_files(EXPERIMENTS)]


def all_pair_keys(wildcards=None):
    return [key for _, key in pair_files(EXPERIMENTS)]


def experiment_pair_files(wildcards):
    return [path for path, _ in pair_files([wildcards.exp])]


def experiment_pair_keys(wildcards):
    return [key for _, key in pair_files([wildcards.exp])]


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


def benchmarked_jobs(exp):
    """{rule: [job names]} of an experiment's jobs with a benchmark: file, which is
    logs/benchmarks/<rule>/<exp>.tsv or logs/benchmarks/<rule>/<exp>/<name>.tsv."""
    spec = config["experiments"][exp]
    sampling, step_control = shard_names(exp, "sampling"), shard_names(
        exp, "step_control"
    )
    precomputed = spec["dpo"]["reference"] == "precomputed"
    return {
        "model_base": [None],
        "sft_train": [] if sft_skipped(exp) else [None],
        "solutions_sample": sampling,
        "negatives_step_controlled": step_control,
        "dpo_train": trained_models(exp),
        "reference_logps": experiment_variants(exp) if precomputed else [],
        "eval_predict": experiment_models(exp),
        "pilot_predict": pilot_benchmarks(exp) if exp in pilot_experiments() else [],
        "credit_assign": [None],
    }


def benchmark_file(rule, exp, name):
    if name is None:
        return f"logs/benchmarks/{rule}/{exp}.tsv"
    return f"logs/benchmarks/{rule}/{exp}/{name}.tsv"


def benchmark_files(wildcards=None):
    """The benchmark: file of every job of the run (tested to cover each rule that has one),
    with what it measures: [(path, [rule, experiment])]."""
    return [
        (benchmark_file(rule, exp, name), [rule, exp])
        for exp in EXPERIMENTS
        for rule, names in benchmarked_jobs(exp).items()
        for name in names
    ]


def all_benchmark_files(wildcards=None):
    return [path for path, _ in benchmark_files()]


def benchmark_keys(wildcards=None):
    return [key for _, key in benchmark_files()]
