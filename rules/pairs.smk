rule pairs_build:
    """f, h. One variant's pairs: D_naive (dpo), its data-equal expansion, or SCDPO's mix."""
    input:
        unpack(pairs_inputs),
    output:
        summary="results/{exp}/pairs/{variant}/summary.json",
        train="results/{exp}/pairs/{variant}/train.jsonl",
        eval="results/{exp}/pairs/{variant}/eval.jsonl",
    log:
        "logs/pairs_build/{exp}/{variant}.log",
    priority: LONGEST_CHAIN
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        pairs=pairs_params,
        code=code("pairs_build.py"),
    script:
        "../workflow_scripts/pairs_build.py"
