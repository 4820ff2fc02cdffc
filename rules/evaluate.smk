rule eval_predict:
    """j. Greedy answers of one model on one benchmark, with code execution and verdicts."""
    input:
        model=model_dir,
        problems="results/benchmarks/{benchmark}.jsonl",
    output:
        ensure("results/{exp}/predictions/{model}/{benchmark}.jsonl", non_empty=True),
    log:
        "logs/eval_predict/{exp}/{model}/{benchmark}.log",
    benchmark:
        "logs/benchmarks/eval_predict/{exp}/{model}/{benchmark}.tsv"
    conda:
        "../envs/eval.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=0,
    params:
        generation=eval_params,
        resume="results/{exp}/.resume/predictions/{model}/{benchmark}.jsonl",
    script:
        "../workflow_scripts/eval_predict.py"


rule table_accuracy:
    """k. Paper Table 1's shape: a row per model, a column per benchmark, plus pair counts."""
    input:
        predictions=all_predictions,
        pairs=all_pair_summaries,
    output:
        csv="results/accuracy.csv",
        md="results/accuracy.md",
    log:
        "logs/table_accuracy/table.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../workflow_scripts/table_accuracy.py"
