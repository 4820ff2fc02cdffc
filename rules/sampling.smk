rule solutions_sample:
    """d-e. Naive sampling with code execution, graded and filtered, one shard of the questions."""
    input:
        model=sft_model,
        questions="results/{exp}/problems/dpo.jsonl",
    output:
        temp("results/{exp}/sampling/shard{shard}-of{shards}.jsonl"),
    log:
        "logs/solutions_sample/{exp}/shard{shard}-of{shards}.log",
    benchmark:
        "logs/benchmarks/solutions_sample/{exp}/shard{shard}-of{shards}.tsv"
    priority: LONGEST_CHAIN
    conda:
        "../envs/generate.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=generation_gpus,
    params:
        generation=sampling_params,
        code=code("solutions_sample.py"),
    script:
        "../workflow_scripts/solutions_sample.py"


rule solutions_merge:
    input:
        shard_files("sampling"),
    output:
        ensure("results/{exp}/sampling/samples.jsonl", non_empty=True),
    log:
        "logs/solutions_merge/{exp}.log",
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
