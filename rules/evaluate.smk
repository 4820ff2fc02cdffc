rule eval_predict:
    """j. Greedy answers of one model on every benchmark of its experiment, with code execution
    and verdicts: one engine load, one predictions file per benchmark in the output folder.
    """
    input:
        model=model_dir,
        questions=benchmark_questions,
    output:
        directory("results/{exp}/predictions/{model}"),
    log:
        "logs/eval_predict/{exp}/{model}.log",
    benchmark:
        "logs/benchmarks/eval_predict/{exp}/{model}.tsv"
    conda:
        "../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=generation_gpus,
    params:
        parts=eval_parts,
        code=code("predict.py"),
    script:
        "../workflow_scripts/predict.py"


rule table_accuracy:
    """k. Paper Table 1: accuracy per model and benchmark with bootstrap intervals, paired
    differences (bootstrap + McNemar) and pair counts; compact in results/accuracy.{csv,md}.
    """
    input:
        predictions=all_predictions,
        pairs=all_pair_files,
    output:
        table_csv="results/accuracy.csv",
        table_md="results/accuracy.md",
        csv=report(
            "results/tables/accuracy_ci.csv",
            caption="../report/accuracy_ci.rst",
            category="1. Table 1",
            labels={"table": "accuracy with CI (CSV)"},
        ),
        differences=report(
            "results/tables/accuracy_differences.csv",
            caption="../report/accuracy_ci.rst",
            category="1. Table 1",
            labels={"table": "paired differences (CSV)"},
        ),
        pairs=report(
            "results/tables/pair_counts.csv",
            caption="../report/accuracy_ci.rst",
            category="1. Table 1",
            labels={"table": "pair counts (CSV)"},
        ),
        md="results/tables/accuracy_ci.md",
        html=report(
            "results/tables/accuracy_ci.html",
            caption="../report/accuracy_ci.rst",
            category="1. Table 1",
            labels={"table": "accuracy, differences and pair counts"},
        ),
    log:
        "logs/table_accuracy/table.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        predictions=prediction_keys,
        pairs=all_pair_keys,
        statistics=statistics_params,
        power=power_params,
        code=code("table_accuracy.py"),
    script:
        "../workflow_scripts/table_accuracy.py"
