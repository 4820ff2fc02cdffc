rule negatives_step_controlled:
    """g. Step-controlled negatives: continue preferred solutions from split points, hotter each block."""
    input:
        model=sft_model,
        questions="results/{exp}/sampling/samples.jsonl",
    output:
        temp("results/{exp}/step_control/shard{shard}-of{shards}.jsonl"),
    log:
        "logs/negatives_step_controlled/{exp}/shard{shard}-of{shards}.log",
    benchmark:
        "logs/benchmarks/negatives_step_controlled/{exp}/shard{shard}-of{shards}.tsv"
    priority: LONGEST_CHAIN
    conda:
        "../envs/generate.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=generation_gpus,
    params:
        generation=step_control_params,
        code=code("negatives_step_controlled.py"),
    script:
        "../workflow_scripts/negatives_step_controlled.py"


rule negatives_merge:
    input:
        shard_files("step_control"),
    output:
        "results/{exp}/step_control/negatives.jsonl",
    log:
        "logs/negatives_merge/{exp}.log",
    priority: LONGEST_CHAIN
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        code=code("merge_shards.py"),
    script:
        "../workflow_scripts/merge_shards.py"
