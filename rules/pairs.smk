rule pairs_build:
    """f, h. D_naive, its data-equal expansion and SCDPO's mix, each with a held-out split."""
    input:
        samples="results/{exp}/sampling/samples.jsonl",
        negatives="results/{exp}/step_control/negatives.jsonl",
        model=sft_model,
    output:
        summary="results/{exp}/pairs/summary.json",
        train=expand("results/{{exp}}/pairs/{variant}/train.jsonl", variant=VARIANTS),
        eval=expand("results/{{exp}}/pairs/{variant}/eval.jsonl", variant=VARIANTS),
    log:
        "logs/pairs_build/{exp}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        pairs=pairs_params,
    script:
        "../workflow_scripts/pairs_build.py"
